"""Backbones bocb implements itself because neither timm nor torchvision ships them (see README.md)."""
