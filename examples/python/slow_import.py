"""Never finishes importing: the start timeout must kill it."""

import time

time.sleep(1000)


def handler(request):
    return "never"
