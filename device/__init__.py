"""The Porchlight camera agent that runs on the homeowner's Raspberry Pi."""
