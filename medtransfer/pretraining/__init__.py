"""Pretraining a backbone without labels, for a later run to start from (``--init DIR``).

- ``plan``: what a pretraining is (its options, its directory), without TensorFlow, so
  that ``sweep --dry-run`` lists pretraining steps at once.
- ``autoencoder``: ``medtransfer pretrain autoencoder``: the backbone as the encoder of
  an autoencoder with a mirrored decoder, trained to reconstruct the training images
  (the MedMNIST transfer exercise); test MSE, PSNR and SSIM.

A pretraining directory holds ``config.yaml`` (the pretraining's options as a run
config, so ``--init DIR`` checks the net), ``best.weights.h5`` (the whole autoencoder;
the backbone loads from it, the classifier head of the run is new), ``history.csv`` and
``metrics.json`` (``"pretraining": "autoencoder"``, ``"status": "complete"``).
"""
