"""The train room: strategy, the replica step, the host loop and what runs between host loops."""
