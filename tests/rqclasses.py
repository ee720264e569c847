"""A custom RQ Job class, as a deployment passes to ``rq worker -j`` (and to ``rqmaint clean -j``).

``AuditedJob`` behaves like RQ's Job but records every retry in Redis (``test:audited_retries``), so a
test sees whether RQ's code ran with this class.
"""

from __future__ import annotations

from typing import Any

from rq.job import Job


class AuditedJob(Job):
    def retry(self, queue: Any, pipeline: Any) -> Any:
        pipeline.rpush("test:audited_retries", self.id)
        return super().retry(queue, pipeline)


class NotAJob:
    pass
