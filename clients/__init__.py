"""Flower client side of fedhar: the ClientApp (one node = one subject) and its config parser."""

from clients.settings import ClientSettings, parse_config

__all__ = ["ClientSettings", "parse_config"]
