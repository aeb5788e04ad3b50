"""`deghost edit`: photos, aligned crops and folders through the Pipeline, on this machine or a Ray cluster."""
