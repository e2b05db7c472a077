"""``bocb probe``: which optimizer for one backbone, from a short adaptive search within a time
budget (:mod:`bocb.probe.run`), sized from a measured throughput (:mod:`bocb.probe.sizing`) and
answered from the store (:mod:`bocb.probe.answer`)."""
