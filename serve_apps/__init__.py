"""Ray Serve applications of the platform; each is named in ``configs/serve/mlaas.yaml``."""
