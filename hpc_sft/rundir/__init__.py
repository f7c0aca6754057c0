"""The run directory (ckpt_output_dir): its layout, the status record, the lock and the settings fingerprint."""
