"""Flower server side of fedhar: the QoM-weighted strategy and the ServerApp."""

from strategies.qom_fedavg import STAGES, QoMFedAvg, parse_reply

__all__ = ["STAGES", "QoMFedAvg", "parse_reply"]
