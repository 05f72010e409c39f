"""The ServiceAccount controller: every active namespace has a `default` ServiceAccount (pods
that name none run as it). Tokens are not stored in Secrets: the API server issues bound tokens
on request (serviceaccounts/<name>/token), as Kubernetes does since 1.24."""

from __future__ import annotations

import logging

from kubeedge.kube import NAMESPACES, SERVICEACCOUNTS
from kubeedge.kube.errors import AlreadyExists, Forbidden, NotFound
from kubeedge.kube.types import Obj

from .framework import Controller, key_of

log = logging.getLogger(__name__)

DEFAULT_ACCOUNTS = ("default",)


def namespace_active(ns: Obj) -> bool:
    md = ns.get("metadata") or {}
    return not md.get("deletionTimestamp") and (ns.get("status") or {}).get("phase") != "Terminating"


class ServiceAccountsController(Controller):
    """Keys are namespace names; each reconcile makes sure the default accounts exist there."""

    name = "serviceaccount"
    workers = 2

    def setup(self) -> None:
        self.namespaces = self.informers.get(NAMESPACES)
        self.accounts = self.informers.get(SERVICEACCOUNTS)
        self.namespaces.add_handler(self._on_namespace)
        self.accounts.add_handler(self._on_account)

    def _on_namespace(self, old: Obj | None, new: Obj | None) -> None:
        if new is not None and namespace_active(new):
            self.queue.add(key_of(new)[1])

    def _on_account(self, old: Obj | None, new: Obj | None) -> None:
        # A default account deleted by someone comes back.
        if new is None and old is not None and key_of(old)[1] in DEFAULT_ACCOUNTS:
            self.queue.add(key_of(old)[0])

    async def reconcile(self, key: str) -> float | None:
        ns = self.namespaces.get("", key)
        if ns is None or not namespace_active(ns):
            return None
        for name in DEFAULT_ACCOUNTS:
            if self.accounts.get(key, name) is not None:
                continue
            try:
                await self.kc.create(SERVICEACCOUNTS, {"metadata": {"name": name}}, namespace=key)
                log.info("created service account %s/%s", key, name)
            except AlreadyExists:
                pass  # our cache lags: it exists
            except (Forbidden, NotFound):
                return None  # the namespace started terminating (or went) meanwhile
        return None
