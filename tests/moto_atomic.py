"""``moto_server`` whose conditional writes are atomic, as S3's are.

moto checks ``If-None-Match`` / ``If-Match`` and then stores the object with
no lock between the two, so under load two racing conditional PUTs of one key
can both succeed (seen: two winners of an 8-thread put-if-absent race), which
S3 never allows.  The S3 handlers that write an object run one at a time here;
everything else (reads, listings, the request recorder) stays concurrent.

    python tests/moto_atomic.py -H 127.0.0.1 -p PORT
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any

from moto import server
from moto.s3.responses import S3Response

_WRITES = threading.Lock()


def _one_at_a_time(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def run(self: Any, *args: Any, **kwargs: Any) -> Any:
        with _WRITES:
            return method(self, *args, **kwargs)

    return run


# put_object: PutObject (If-None-Match / If-Match); _key_response_post:
# CompleteMultipartUpload, which checks the same conditions
for _name in ("put_object", "_key_response_post"):
    setattr(S3Response, _name, _one_at_a_time(getattr(S3Response, _name)))


if __name__ == "__main__":
    server.main()
