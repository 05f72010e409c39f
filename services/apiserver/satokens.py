"""Bound service-account tokens: the signing key, TokenRequest (serviceaccounts/<name>/token), and
the bearer-token check that turns a valid token back into its service account's identity.

Tokens are ES256 JWTs with upstream's claims, so in-cluster clients and tools that decode them
(kubectl, client-go, the Python client) see what they expect. A token is only as good as the
objects it is bound to: it stops working when its ServiceAccount (or bound Pod/Secret) is deleted,
even before it expires, because every check looks them up again.
"""

from __future__ import annotations

import base64
import collections
import datetime as dt
import hashlib
import logging
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from kubeedge.pki import certs
from kubeedge.store import NotFound, Store

from .auth import SA_GROUP, Identity
from .auth import SA_PREFIX as SA_USER_PREFIX
from .errors import ApiError, bad_request, forbidden, invalid
from .resources import ResourceInfo

log = logging.getLogger(__name__)

Obj = dict[str, Any]

DEFAULT_EXPIRATION = 3600
MIN_EXPIRATION = 600  # upstream refuses shorter tokens ("may not specify a duration less than 10 minutes")
MAX_EXPIRATION = 48 * 3600  # longer requests are cut to this, as --service-account-max-token-expiration does
NBF_LEEWAY = 60  # seconds of clock skew tolerated on "not before"
_VERIFIED_CACHE = 4096  # signature checks remembered (ECDSA verification dominates a request's cost)
_COORD = 32  # bytes per P-256 coordinate in a JWS signature (r || s)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def issuer_for(cluster_domain: str) -> str:
    return f"https://kubernetes.default.svc.{cluster_domain}"


class SigningKey:
    """An ECDSA P-256 key signing and verifying compact JWS (ES256)."""

    def __init__(self, key: ec.EllipticCurvePrivateKey) -> None:
        self.key = key
        self.public = key.public_key()
        der = self.public.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        # Like upstream, the key id is a hash of the public key: verifiers find the right key by it.
        self.kid = _b64(hashlib.sha256(der).digest())

    @classmethod
    def load_or_create(cls, path: Path) -> SigningKey:
        if path.exists():
            loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
            if not isinstance(loaded, ec.EllipticCurvePrivateKey):
                raise ValueError(f"{path}: the service-account key must be an EC (P-256) key")
            return cls(loaded)
        path.parent.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        certs.write_private(path, pem)
        log.info("created the service-account signing key %s", path)
        return cls(key)

    def sign(self, claims: Obj) -> str:
        header = {"alg": "ES256", "kid": self.kid}
        signing_input = f"{_b64(orjson.dumps(header))}.{_b64(orjson.dumps(claims))}"
        der = self.key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        return f"{signing_input}.{_b64(r.to_bytes(_COORD, 'big') + s.to_bytes(_COORD, 'big'))}"

    def verify(self, token: str) -> Obj | None:
        """The claims of a token this key signed, or None (not a JWS, another key, bad signature)."""
        parts = token.split(".")
        if len(parts) != 3:
            return None
        try:
            header = orjson.loads(_unb64(parts[0]))
            sig = _unb64(parts[2])
            if not isinstance(header, dict) or header.get("alg") != "ES256" or len(sig) != 2 * _COORD:
                return None
            if header.get("kid", self.kid) != self.kid:
                return None
            der = encode_dss_signature(
                int.from_bytes(sig[:_COORD], "big"), int.from_bytes(sig[_COORD:], "big")
            )
            self.public.verify(der, f"{parts[0]}.{parts[1]}".encode(), ec.ECDSA(hashes.SHA256()))
            claims = orjson.loads(_unb64(parts[1]))
        except (ValueError, InvalidSignature, orjson.JSONDecodeError):
            return None
        return claims if isinstance(claims, dict) else None


def _rfc3339(ts: int) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _past(timestamp: Any, now: float) -> bool:
    """Whether an RFC 3339 deletionTimestamp lies before `now` (the object is as good as gone)."""
    if not isinstance(timestamp, str) or not timestamp:
        return False
    try:
        when = dt.datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:
        return False
    return when.timestamp() < now


class ServiceAccountTokens:
    """Issues TokenRequests and authenticates the tokens it issued (a TokenAuthenticator checker)."""

    def __init__(self, store: Store, data_dir: Path, cluster_domain: str) -> None:
        self.store = store
        self.key_path = data_dir / "pki" / "sa.key"
        self.issuer = issuer_for(cluster_domain)
        # Tokens without audiences are for the API server itself, as upstream's default audience.
        self.api_audiences: tuple[str, ...] = (self.issuer,)
        self._key: SigningKey | None = None
        self._verified: collections.OrderedDict[str, Obj] = collections.OrderedDict()

    @property
    def key(self) -> SigningKey:
        if self._key is None:
            self._key = SigningKey.load_or_create(self.key_path)
        return self._key

    def load_key(self) -> None:
        """Create the key once (at start), so the first TokenRequest does not pay for it."""
        _ = self.key

    # ---- TokenRequest ----------------------------------------------------------------------

    def token_request(
        self, info: ResourceInfo, ns: str, name: str, req: Obj, ident: Identity | None, dry_run: bool = False
    ) -> Obj:
        """Answer POST serviceaccounts/<name>/token with the TokenRequest, its status filled in."""
        spec = req.get("spec") if isinstance(req.get("spec"), dict) else {}
        assert isinstance(spec, dict)
        sa = self._get("serviceaccounts", ns, name)
        if sa is None:
            raise ApiError(
                404,
                "NotFound",
                f'serviceaccounts "{name}" not found',
                details={"name": name, "kind": "serviceaccounts"},
            )
        seconds = self._expiration(info, name, spec.get("expirationSeconds"))
        audiences = [str(a) for a in spec.get("audiences") or () if a] or list(self.api_audiences)
        ref = spec.get("boundObjectRef") if isinstance(spec.get("boundObjectRef"), dict) else None
        bound = self._bound_object(ns, sa, ref) if ref else None
        _node_restriction(ident, ref, bound)
        now = int(time.time())
        k8s: Obj = {
            "namespace": ns,
            "serviceaccount": {"name": name, "uid": sa["metadata"].get("uid", "")},
        }
        if bound is not None and ref is not None:
            kind = "pod" if ref.get("kind") == "Pod" else "secret"
            k8s[kind] = {"name": bound["metadata"]["name"], "uid": bound["metadata"].get("uid", "")}
            node = (bound.get("spec") or {}).get("nodeName") if kind == "pod" else None
            if node:
                node_obj = self._get("nodes", "", node)
                k8s["node"] = {"name": node, "uid": (node_obj or {}).get("metadata", {}).get("uid", "")}
        claims: Obj = {
            "aud": audiences,
            "exp": now + seconds,
            "iat": now,
            "iss": self.issuer,
            "jti": str(uuid.uuid4()),
            "kubernetes.io": k8s,
            "nbf": now,
            "sub": f"{SA_USER_PREFIX}{ns}:{name}",
        }
        out_spec: Obj = {"audiences": audiences, "expirationSeconds": seconds}
        if ref is not None and bound is not None:
            out_spec["boundObjectRef"] = {**ref, "uid": bound["metadata"].get("uid", "")}
        return {
            "kind": "TokenRequest",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"name": name, "namespace": ns, "creationTimestamp": _rfc3339(now)},
            "spec": out_spec,
            "status": {
                "token": "" if dry_run else self.key.sign(claims),
                "expirationTimestamp": _rfc3339(now + seconds),
            },
        }

    @staticmethod
    def _expiration(info: ResourceInfo, name: str, requested: Any) -> int:
        if requested is None:
            return DEFAULT_EXPIRATION
        if not isinstance(requested, int) or isinstance(requested, bool):
            raise bad_request("spec.expirationSeconds must be an integer")
        if requested < MIN_EXPIRATION:
            cause = {
                "reason": "FieldValueInvalid",
                "field": "spec.expirationSeconds",
                "message": "may not specify a duration less than 10 minutes",
            }
            raise invalid(info, name, [cause])
        return min(requested, MAX_EXPIRATION)

    def _bound_object(self, ns: str, sa: Obj, ref: Obj) -> Obj:
        kind, name, uid = ref.get("kind"), ref.get("name"), ref.get("uid")
        if ref.get("apiVersion", "v1") != "v1" or kind not in ("Pod", "Secret"):
            raise bad_request(f"cannot bind token to object of type {ref.get('apiVersion', '')}, Kind={kind}")
        if not name:
            raise bad_request("boundObjectRef.name is required")
        key = "pods" if kind == "Pod" else "secrets"
        obj = self._get(key, ns, str(name))
        if obj is None:
            raise ApiError(404, "NotFound", f'{key} "{name}" not found', details={"name": name, "kind": key})
        if uid and obj["metadata"].get("uid") != uid:
            raise ApiError(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {key} "{name}": the UID in the bound object reference '
                f"({uid}) does not match the UID in record. The object might have been deleted and "
                "then recreated",
            )
        if kind == "Pod":
            used = (obj.get("spec") or {}).get("serviceAccountName") or "default"
            if used != sa["metadata"]["name"]:
                raise bad_request(
                    f'cannot bind token for serviceaccount "{sa["metadata"]["name"]}" to pod running '
                    f'with different serviceaccount name "{used}"'
                )
        return obj

    def _get(self, key: str, ns: str, name: str) -> Obj | None:
        try:
            return self.store.get_now(key, ns, name).obj
        except NotFound:
            return None

    # ---- authentication --------------------------------------------------------------------

    def authenticate(self, token: str) -> Identity | None:
        """The service account behind a token we issued, if the token is (still) valid."""
        claims = self._verified_claims(token)
        if claims is None or claims.get("iss") != self.issuer:
            return None
        now = time.time()
        if not self._times_ok(claims, now) or not self._audience_ok(claims.get("aud")):
            return None
        k8s = claims.get("kubernetes.io")
        if not isinstance(k8s, dict):
            return None
        ns = str(k8s.get("namespace") or "")
        sa_ref = k8s.get("serviceaccount") or {}
        name = str(sa_ref.get("name") or "")
        if not ns or not name or not self._alive("serviceaccounts", ns, sa_ref, now):
            return None
        extra: Obj = {"authentication.kubernetes.io/credential-id": [f"JTI={claims.get('jti', '')}"]}
        for kind, key in (("pod", "pods"), ("secret", "secrets")):
            ref = k8s.get(kind)
            if ref is None:
                continue
            if not isinstance(ref, dict) or not self._alive(key, ns, ref, now):
                return None
            if kind == "pod":
                extra["authentication.kubernetes.io/pod-name"] = [str(ref.get("name"))]
                extra["authentication.kubernetes.io/pod-uid"] = [str(ref.get("uid"))]
        node = k8s.get("node")
        if isinstance(node, dict) and node.get("name"):
            extra["authentication.kubernetes.io/node-name"] = [str(node["name"])]
        return Identity(
            f"{SA_USER_PREFIX}{ns}:{name}",
            (SA_GROUP, f"{SA_GROUP}:{ns}", "system:authenticated"),
            str(sa_ref.get("uid") or ""),
            extra,
        )

    def _verified_claims(self, token: str) -> Obj | None:
        claims = self._verified.get(token)
        if claims is not None:
            self._verified.move_to_end(token)
            return claims
        claims = self.key.verify(token)
        if claims is not None:
            self._verified[token] = claims
            if len(self._verified) > _VERIFIED_CACHE:
                self._verified.popitem(last=False)
        return claims

    @staticmethod
    def _times_ok(claims: Obj, now: float) -> bool:
        exp, nbf = claims.get("exp"), claims.get("nbf")
        if not isinstance(exp, int | float) or now >= exp:
            return False
        return not (isinstance(nbf, int | float) and now + NBF_LEEWAY < nbf)

    def _audience_ok(self, aud: Any) -> bool:
        if aud is None or aud == [] or aud == "":
            return True
        auds = [aud] if isinstance(aud, str) else aud
        return isinstance(auds, list) and any(a in self.api_audiences for a in auds)

    def _alive(self, key: str, ns: str, ref: Obj, now: float) -> bool:
        """The referenced object still exists as the same object (uid) and is not deleted."""
        obj = self._get(key, ns, str(ref.get("name") or ""))
        if obj is None:
            return False
        md = obj.get("metadata") or {}
        if ref.get("uid") and md.get("uid") != ref.get("uid"):
            return False
        return not _past(md.get("deletionTimestamp"), now)


def _node_restriction(ident: Identity | None, ref: Obj | None, bound: Obj | None) -> None:
    """A node may only request tokens bound to a pod that runs on it (NodeRestriction admission)."""
    node = ident.node_name if ident is not None else None
    if node is None:
        return
    if ref is None or ref.get("kind") != "Pod" or bound is None:
        raise forbidden(f'node "{node}" can only create tokens bound to pods')
    if (bound.get("spec") or {}).get("nodeName") != node:
        raise forbidden(f'node "{node}" can only create tokens bound to pods scheduled on it')


__all__ = ["SA_GROUP", "SA_USER_PREFIX", "ServiceAccountTokens", "SigningKey", "issuer_for"]
