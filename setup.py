"""Package list for the wheel: the source folder services/ installs as the package `kubeedge`.

pyproject's package-dir maps the name, but setuptools' find would list the packages under their folder
names (services.*), producing a wheel without `kubeedge`; listing them under the mapped names fixes that.
"""

from setuptools import find_packages, setup

setup(
    packages=[
        "kubeedge",
        *(f"kubeedge.{p}" for p in find_packages("services")),
        "edgemesh",
        *(f"edgemesh.{p}" for p in find_packages("edgemesh")),
    ]
)
