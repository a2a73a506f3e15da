"""The student networks: one registry record per architecture and the Keras layers and models they build."""
