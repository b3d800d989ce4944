"""The live desk service (`energy-assets dashboard`): positions from the capture buffer,
prices and history from the files the batch layer publishes, pushed to the traders' pages."""
