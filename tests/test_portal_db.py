"""The portal's database layer on SQLite and PostgreSQL: migrations reach the metadata, the
app answers, request bodies are limited before they are read, the config is checked."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from fastapi import Request
from fastapi.testclient import TestClient

from config import ConfigError
from portal import PortalContext, create_app, load_portal_config, migrate, open_engine
from portal._config import ApiSection, ChainSection, PortalConfig
from portal._db import all_tables


def test_migrations_give_exactly_the_declared_schema(db_url: str) -> None:
    engine = open_engine(db_url)
    migrate(engine)
    migrate(engine)  # idempotent
    with engine.connect() as c:
        diff = compare_metadata(MigrationContext.configure(c), all_tables())
        version = c.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
    engine.dispose()
    assert diff == []
    assert version is not None


@contextlib.contextmanager
def _ctx(db_url: str, **api: object) -> Iterator[PortalContext]:
    cfg = PortalConfig(chain=ChainSection(address_book=Path("x.json")), api=ApiSection(**api))
    engine = open_engine(db_url)
    migrate(engine)
    try:
        yield PortalContext(config=cfg, engine=engine)
    finally:
        engine.dispose()


def test_health_names_the_database(db_url: str) -> None:
    with _ctx(db_url) as ctx, TestClient(create_app(ctx)) as client:
        r = client.get("/v1/health")
    assert r.status_code == 200
    assert r.json() == {"status": "ok", "database": db_url.split(":")[0].split("+")[0]}


def test_a_body_over_the_limit_is_refused_before_it_is_read(tmp_path: Path) -> None:
    with _ctx(f"sqlite:///{tmp_path / 'p.db'}", max_body_bytes=2048) as ctx:
        app = create_app(ctx)
        seen: list[int] = []

        @app.post("/echo")
        async def echo(request: Request) -> dict[str, int]:
            seen.append(len(await request.body()))
            return {"n": seen[-1]}

        client = TestClient(app)
        r = client.post("/echo", content=b"x" * 4096)
        assert r.status_code == 413
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["status"] == 413 and "2,048" in r.json()["detail"]

        def chunks():  # no Content-Length: counted as it arrives
            for _ in range(5):
                yield b"y" * 1000

        r = client.post("/echo", content=chunks())
        assert r.status_code == 413
        assert seen == []  # the endpoint never got either body
        assert client.post("/echo", content=b"z" * 2048).json() == {"n": 2048}
        r = client.get("/v1/nowhere")
        assert r.status_code == 404 and r.json()["title"] == "Not Found"


def test_portal_yaml_paths_are_relative_to_the_file(tmp_path: Path) -> None:
    f = tmp_path / "portal.yaml"
    f.write_text("database: {url: 'sqlite:///data/p.db'}\nchain: {address_book: book.json}\n")
    cfg = load_portal_config(f)
    assert cfg.database.url == f"sqlite:///{tmp_path / 'data/p.db'}"
    assert cfg.chain.address_book == tmp_path / "book.json"
    assert cfg.auth.secret_file == tmp_path / "portal-secret"


@pytest.mark.parametrize("text, where", [
    ("chain: {address_book: b.json, confirmations: -1}\n", "chain.confirmations"),
    ("chain: {address_book: b.json}\napi: {prot: 1}\n", "api.prot"),
    ("chain: {address_book: b.json}\noutputs: [{enterprise: '0x12', period: 1, output: 3}]\n",
     "outputs[0].enterprise"),
])
def test_portal_yaml_errors_name_the_path(tmp_path: Path, text: str, where: str) -> None:
    f = tmp_path / "portal.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_portal_config(f)
    assert where in str(e.value)


def test_the_published_openapi_schema_is_the_apps(tmp_path: Path) -> None:
    """docs/portal-openapi.json is what `mrv-portal openapi` writes today (regenerate it with
    `mrv-portal openapi --out docs/portal-openapi.json` after an API change)."""
    from portal._cli import main

    out = tmp_path / "openapi.json"
    assert main(["openapi", "--out", str(out)]) == 0
    published = Path(__file__).resolve().parents[1] / "docs" / "portal-openapi.json"
    assert json.loads(out.read_text()) == json.loads(published.read_text())
    paths = json.loads(out.read_text())["paths"]
    assert "/v1/ingest/batches" in paths and "/v1/rankings" in paths


def test_a_context_that_fails_to_build_closes_its_engine(
        db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A token secret too short, found after the schema was migrated: the error is the
    config's, and the engine opened for the migration holds no connection afterwards."""
    import portal._runtime as runtime
    from portal import build_context
    from portal._errors import PortalConfigError

    book = tmp_path / "book.json"
    book.write_text(json.dumps({"chain_id": 31337, "contracts": {}}))
    secret = tmp_path / "secret"
    secret.write_bytes(b"short")
    opened: list[sa.Engine] = []
    real = runtime.open_engine

    def spy(*a: object, **k: object) -> sa.Engine:
        opened.append(real(*a, **k))  # type: ignore[arg-type]
        return opened[-1]

    monkeypatch.setattr(runtime, "open_engine", spy)
    cfg = PortalConfig.model_validate({"database": {"url": db_url},
                                       "chain": {"address_book": book},
                                       "auth": {"secret_file": secret}})
    with pytest.raises(PortalConfigError, match="at least 32 bytes"):
        build_context(cfg)
    assert len(opened) == 1
    assert opened[0].pool.checkedin() == 0  # disposed: a fresh, empty pool
    with opened[0].connect() as c:  # (the migration did run, before the secret was read)
        assert "batches" in sa.inspect(c).get_table_names()
    opened[0].dispose()
