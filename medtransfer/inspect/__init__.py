"""Look inside a trained run: each command reads a finished run through ``open_run``.

- ``sample``: a fixed, seeded sample of a run's test images, drawn and fed to its model.
- ``plots``: what the pictures share: class colours, short names for runs, notes.
- ``tsne``: ``medtransfer tsne``: t-SNE of the penultimate features; Projector files.
- ``similarity``: ``medtransfer similarity``: SVCCA per backbone block vs the init or a run.
- ``gradcam``: ``medtransfer gradcam``: where the network looks, as Grad-CAM heatmaps.
"""
