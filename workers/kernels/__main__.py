"""`python -m workers.kernels`: compile every kernel into numba's on-disk cache."""

from workers.kernels import warm_up

for module, seconds in warm_up().items():
    print(f"{module}: {seconds:.2f} s")
