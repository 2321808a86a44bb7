"""rllib_av: distributed TD3 driving agent on Ray RLlib that watches its own critic."""

__version__ = "0.1.0"
