"""Transfer studies (issue 7, method.md section 9): pre-trained models x fine-tuning optimizers.

- :mod:`~bocb.transfer.study`: the transfer study file, its pre-trained sources and its trials.
- :mod:`~bocb.transfer.coco`, :mod:`~bocb.transfer.synthetic`, :mod:`~bocb.transfer.detection`:
  the detection task (COCO-format data, RetinaNet + FPN on a zoo backbone, COCOeval).

Classification fine-tuning is an ordinary trial (:class:`bocb.spec.TrialSpec` with
``pretrained`` and ``finetune``) run by :func:`bocb.trial.run_trial`.
"""
