"""chunkwise: batched, resumable Django data migrations, operated on Kubernetes.

The public surface for migration authors is :class:`chunkwise.django.BatchedRunPython`
(import it from there: importing Django models here would need settings configured).
"""

__version__ = "0.1.0"
