"""The README's two commands stay true: CI runs the README's test command."""

import os
import re

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _read(*path):
  with open(os.path.join(REPO, *path)) as f:
    return f.read()


def _readme_commands():
  return re.findall(r'```bash\n(python3 -m venv .*?)\n```', _read('README.md'))


def test_readme_starts_with_the_train_and_test_commands():
  train_command, test_command = _readme_commands()[:2]
  assert 'main.py --config=configs/wgan_gp.py' in train_command
  assert 'pytest' in test_command


def test_ci_runs_the_readme_test_command_verbatim():
  test_command = _readme_commands()[1]
  # The venv is made by .ci/run itself; the rest must be identical.
  install_and_test = test_command.split(' && ', 2)[2]
  assert install_and_test in _read('.ci', 'run')
