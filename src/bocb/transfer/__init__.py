"""Transfer studies (the paper's transfer finding): pre-trained models x fine-tuning optimizers.

- :mod:`~bocb.transfer.study`: the transfer study file, its pre-trained sources and its trials.
- :mod:`~bocb.transfer.coco`, :mod:`~bocb.transfer.keypoints`, :mod:`~bocb.transfer.synthetic`:
  COCO-format detection and keypoint data (read and validated; synthetic shapes and landmarks on
  real CIFAR backgrounds for tests and demos).
- :mod:`~bocb.transfer.retinanet`: RetinaNet + FPN on a zoo backbone's stages.
- :mod:`~bocb.transfer.detection`, :mod:`~bocb.transfer.pose`: the detection and pose (SimpleBaseline)
  tasks: recipes, what they prepare for the one training loop, COCOeval scoring;
  :mod:`~bocb.transfer.downstream`: a downstream fine-tuning trial's spec and run, for both.

Classification fine-tuning is an ordinary trial (:class:`bocb.spec.TrialSpec` with
``pretrained`` and ``finetune``) run by :func:`bocb.trial.run_trial`.
"""
