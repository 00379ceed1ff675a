"""State-dict adapters: reference implementations' weights -> kinema's presets, one small file per
family. Each maps a config and a state dict and checks that every source tensor was used, so a
checkpoint never loads partially without an error. diffusers itself is never imported here."""
