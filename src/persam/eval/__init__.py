"""Evaluation metrics (PerSeg mIoU / bIoU, DAVIS 2017 J&F) and dataset loaders."""
