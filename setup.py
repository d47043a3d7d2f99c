"""Only one job beyond pyproject.toml: ship the repository's ``configs/`` inside the package.

The wheel gets ``echodistill/configs/**.yaml`` (package data), so ``-c demo`` and
``echodistill config path accelerate/ddp_gpu`` work after a plain ``pip install``
(``echodistill/config_files.py`` finds them); a source checkout reads ``configs/`` directly.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildWithConfigs(build_py):
    def run(self):
        super().run()
        src = Path(__file__).resolve().parent / "configs"
        if src.is_dir():  # absent only in an sdist built without MANIFEST.in
            shutil.copytree(src, Path(self.build_lib) / "echodistill" / "configs", dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("*.pyc", "__pycache__"))


setup(cmdclass={"build_py": BuildWithConfigs})
