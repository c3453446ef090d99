"""Reading the output of training subprocesses in tests."""

import time


def read_until(process, text: str, timeout: float = 240) -> str:
  """Reads `process.stdout` up to the first line holding `text`.

  Returns the lines read, joined. Kills the process and raises
  AssertionError with the last lines if `text` does not appear in time.
  """
  lines, deadline = [], time.time() + timeout
  while time.time() < deadline:
    line = process.stdout.readline()
    if not line:
      break
    lines.append(line)
    if text in line:
      return ''.join(lines)
  process.kill()
  raise AssertionError(f'{text!r} not seen; output:\n' + ''.join(lines[-30:]))
