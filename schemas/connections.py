"""How to reach Kafka: one frozen description shared by the worker, the services feed, the relay's producer
and the operator commands, with the mapping to each client's options: aiokafka's (everything slotguard
runs itself) and the Java clients' (the relay, which runs Debezium's).

Plain values only (the composition root fills it from the settings). The password is a
:class:`~pydantic.SecretStr`, so printing the object never shows it.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import SecretStr

from schemas.errors import ConfigError

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


@dataclass(frozen=True)
class KafkaConnection:
    """Bootstrap servers and security of every Kafka client slotguard opens."""

    bootstrap: str = "127.0.0.1:9092"
    security_protocol: SecurityProtocol = "PLAINTEXT"
    sasl_mechanism: SaslMechanism = "PLAIN"
    username: str | None = None
    password: SecretStr | None = None
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None

    @property
    def servers(self) -> list[str]:
        return [s.strip() for s in self.bootstrap.split(",") if s.strip()]

    @property
    def uses_tls(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    @property
    def uses_sasl(self) -> bool:
        return self.security_protocol in ("SASL_PLAINTEXT", "SASL_SSL")

    def ssl_context(self) -> ssl.SSLContext | None:
        if not self.uses_tls:
            return None
        try:
            context = ssl.create_default_context(cafile=self.ca_file)
            if self.cert_file:
                context.load_cert_chain(self.cert_file, self.key_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"Kafka TLS files cannot be used: {type(exc).__name__}: {exc}") from None
        return context

    def _credentials(self) -> tuple[str, str]:
        """The SASL user and password; a one-line ConfigError naming the settings when either is missing."""
        if not self.username or self.password is None:
            raise ConfigError(
                f"Kafka {self.security_protocol} needs SLOTGUARD_KAFKA_USERNAME and SLOTGUARD_KAFKA_PASSWORD"
            )
        return self.username, self.password.get_secret_value()

    def aiokafka_options(self) -> dict[str, Any]:
        """Keyword arguments of aiokafka's consumer, producer and admin client."""
        options: dict[str, Any] = {
            "bootstrap_servers": self.servers,
            "security_protocol": self.security_protocol,
        }
        context = self.ssl_context()
        if context is not None:
            options["ssl_context"] = context
        if self.uses_sasl:
            user, secret = self._credentials()
            options["sasl_mechanism"] = self.sasl_mechanism
            options["sasl_plain_username"] = user
            options["sasl_plain_password"] = secret
        return options

    def java_properties(self) -> dict[str, str]:
        """Properties of Kafka's Java clients (the relay's producer and admin client)."""
        props = {"bootstrap.servers": ",".join(self.servers), "security.protocol": self.security_protocol}
        if self.uses_tls:
            if self.ca_file:
                props["ssl.truststore.type"] = "PEM"
                props["ssl.truststore.location"] = self.ca_file
            if self.cert_file:
                # Java's PEM keystore reads the private key and the certificate chain from one file.
                props["ssl.keystore.type"] = "PEM"
                props["ssl.keystore.location"] = self.cert_file
        if self.uses_sasl:
            user, secret = self._credentials()
            module = (
                "org.apache.kafka.common.security.plain.PlainLoginModule"
                if self.sasl_mechanism == "PLAIN"
                else "org.apache.kafka.common.security.scram.ScramLoginModule"
            )
            user, secret = user.replace('"', '\\"'), secret.replace('"', '\\"')
            props["sasl.mechanism"] = self.sasl_mechanism
            props["sasl.jaas.config"] = f'{module} required username="{user}" password="{secret}";'
        return props


RedisKind = Literal["single", "cluster", "sentinel"]

#: URL schemes of ``SLOTGUARD_REDIS_URL``: the kind of deployment, and whether the connections use TLS.
REDIS_SCHEMES: dict[str, tuple[RedisKind, bool]] = {
    "redis": ("single", False),
    "rediss": ("single", True),
    "redis+cluster": ("cluster", False),
    "rediss+cluster": ("cluster", True),
    "redis+sentinel": ("sentinel", False),
    "rediss+sentinel": ("sentinel", True),
}


@dataclass(frozen=True)
class RedisConnection:
    """How to reach the cache: one server, a Redis Cluster (any of its nodes to start from), or the primary
    a set of Sentinels names. Parsed from ``SLOTGUARD_REDIS_URL`` by :meth:`parse`:

    * ``redis[s]://[user:password@]host:port[/db]`` -- one server;
    * ``redis[s]+cluster://[user:password@]host:port[,host:port...]`` -- a cluster (database 0 only);
    * ``redis[s]+sentinel://[user:password@]host:port[,host:port...]/master-name[/db]`` -- the Sentinels'
      addresses; the user and password are the data nodes' (``sentinel_password`` the Sentinels', if any).
    """

    url: SecretStr
    kind: RedisKind
    tls: bool
    nodes: tuple[tuple[str, int], ...]
    username: str | None
    password: SecretStr | None
    db: int
    master: str | None = None
    ca_file: str | None = None
    sentinel_password: SecretStr | None = None

    @classmethod
    def parse(
        cls, url: SecretStr | str, *, ca_file: str | None = None, sentinel_password: SecretStr | None = None
    ) -> RedisConnection:
        """Raises :class:`ConfigError` naming what is wrong, never echoing the URL (it holds the password)."""
        from urllib.parse import unquote

        url = url if isinstance(url, SecretStr) else SecretStr(url)
        raw = url.get_secret_value()
        scheme, sep, rest = raw.partition("://")
        if not sep or scheme.lower() not in REDIS_SCHEMES:
            known = ", ".join(f"{s}://" for s in REDIS_SCHEMES)
            raise ConfigError(f"SLOTGUARD_REDIS_URL must start with one of {known}")
        kind, tls = REDIS_SCHEMES[scheme.lower()]
        netloc, _, path = rest.partition("/")
        userinfo, at, hosts = netloc.rpartition("@")
        if not at:
            hosts, userinfo = netloc, ""
        username = password = None
        if userinfo:
            user, colon, secret = userinfo.partition(":")
            username = unquote(user) or None
            password = SecretStr(unquote(secret)) if colon else None
        nodes: list[tuple[str, int]] = []
        default_port = 26379 if kind == "sentinel" else 6379
        for part in filter(None, (p.strip() for p in hosts.split(","))):
            host, colon, port = part.rpartition(":")
            if not colon:
                host, port = part, str(default_port)
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ConfigError(
                    f"SLOTGUARD_REDIS_URL has an invalid host or port ({kind} node {len(nodes) + 1})"
                )
            nodes.append((host, int(port)))
        if not nodes:
            raise ConfigError("SLOTGUARD_REDIS_URL has no host")
        if kind == "single" and len(nodes) > 1:
            raise ConfigError(
                "SLOTGUARD_REDIS_URL names several hosts: use redis+cluster:// or redis+sentinel://"
            )
        segments = [unquote(s) for s in path.split("?")[0].split("/") if s]
        master = None
        if kind == "sentinel":
            if not segments:
                raise ConfigError("a redis+sentinel:// URL needs the primary's name: .../master-name[/db]")
            master = segments.pop(0)
        if len(segments) > 1 or (segments and not segments[0].isdigit()):
            raise ConfigError("SLOTGUARD_REDIS_URL's path must be the database number")
        db = int(segments[0]) if segments else 0
        if kind == "cluster" and db != 0:
            raise ConfigError("a Redis Cluster has database 0 only")
        return cls(url, kind, tls, tuple(nodes), username, password, db, master, ca_file, sentinel_password)
