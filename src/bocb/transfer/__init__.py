"""Transfer studies (the paper's transfer finding): pre-trained models x fine-tuning optimizers.

- :mod:`~bocb.transfer.study`: the transfer study file, its pre-trained sources and its trials.
- :mod:`~bocb.transfer.coco`, :mod:`~bocb.transfer.synthetic`: COCO-format detection data (read
  and validated; synthetic shapes on real CIFAR backgrounds for tests and demos).
- :mod:`~bocb.transfer.retinanet`: RetinaNet + FPN on a zoo backbone's stages.
- :mod:`~bocb.transfer.detection`: the detection recipes, fine-tuning loop and COCOeval scoring;
  :mod:`~bocb.transfer.detection_trial`: a detection fine-tuning trial's spec and run.

Classification fine-tuning is an ordinary trial (:class:`bocb.spec.TrialSpec` with
``pretrained`` and ``finetune``) run by :func:`bocb.trial.run_trial`.
"""
