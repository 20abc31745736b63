"""`bastion registry ...`: register, sign, verify, trace and export models, datasets and reports; scan artifacts from
elsewhere before anything loads them; write an ML bill of materials."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table
from rich.tree import Tree

from bastion.cli._console import console, err_console
from bastion.errors import ConfigError

registry_app = typer.Typer(
    help="A registry of signed, versioned models and datasets with lineage; scanning; ML-BOM.", no_args_is_help=True
)
RegOpt = Annotated[
    Path,
    typer.Option("--registry", "-r", envvar="BASTION_REGISTRY", help="the registry folder (`bastion registry init`)"),
]
TrustOpt = Annotated[
    list[Path] | None,
    typer.Option("--trust", help="a trusted public key (PEM) or a folder of them (repeatable)"),
]
SignOpt = Annotated[Path | None, typer.Option("--sign", help="sign with this private key (PEM, `registry keygen`)")]
SignCertOpt = Annotated[
    Path | None, typer.Option("--sign-cert", help="certificate mode: the signing certificate (PEM) of --sign's key")
]
SignChainOpt = Annotated[
    list[Path] | None, typer.Option("--sign-chain", help="certificate mode: intermediate certificates (repeatable)")
]
TrustChainOpt = Annotated[
    list[Path] | None,
    typer.Option("--trust-chain", help="trust certificates that chain to this root/intermediate (PEM; repeatable)"),
]
PasswordOpt = Annotated[
    str | None, typer.Option("--password-env", help="environment variable holding the signing key's password")
]
DEFAULT = Path("bastion-registry")


def _open(path: Path) -> Any:
    from bastion.registry import Registry

    return Registry.open(path)


def _key(sign: Path | None, password_env: str | None, cert: Path | None = None, chain: list[Path] | None = None) -> Any:
    from bastion.registry import SigningKey

    if sign is None:
        if password_env or cert or chain:
            raise ConfigError("--password-env, --sign-cert and --sign-chain are for a signing key; give --sign KEY too")
        return None
    password = None
    if password_env:
        password = os.environ.get(password_env)
        if password is None:
            raise ConfigError(f"--password-env {password_env}: that environment variable is not set")
    if bool(chain) != (cert is not None):
        raise ConfigError(
            "certificate mode takes both --sign-cert (the key's certificate) and --sign-chain (up to the root)"
        )
    key = SigningKey(sign, password, cert, tuple(chain or ()))
    key.check()
    return key


def _torch_threads() -> None:
    """For the registry commands that load data or models: torch's threads as every other command sets them."""
    from bastion._torch import configure_threads

    configure_threads()


def _trust(keys: list[Path] | None, chain: list[Path] | None = None) -> Any:
    from bastion.registry import TrustPolicy

    return TrustPolicy.from_keys(list(keys or []), list(chain or []))


@registry_app.command("init")
def init(
    path: Annotated[Path, typer.Argument(help="a new or empty folder")] = DEFAULT,
    index: Annotated[
        str | None, typer.Option(help="keep the index in this database (e.g. postgresql+psycopg://host/db)")
    ] = None,
) -> None:
    """Create a registry (a folder for the artifacts; its index in SQLite there, or in the database --index names)."""
    from bastion.registry import Registry

    Registry.init(path, index_url=index).close()
    console.print(f"created registry {escape(str(path))}")


@registry_app.command("keygen")
def keygen(
    key: Annotated[Path, typer.Option("--key", help="where to write the private key (PEM, mode 0600)")],
    pub: Annotated[Path | None, typer.Option("--pub", help="public key path (default: KEY with .pub)")] = None,
    password_env: PasswordOpt = None,
) -> None:
    """Make an ECDSA P-256 signing key pair; give the public key to whoever verifies."""
    from bastion.registry import generate_keypair

    password = None
    if password_env:
        password = os.environ.get(password_env)
        if not password:
            raise ConfigError(f"--password-env {password_env}: that environment variable is not set or empty")
    pub = pub or key.with_suffix(".pub")
    fp = generate_keypair(key, pub, password=password)
    console.print(f"private key {escape(str(key))} (keep it secret), public key {escape(str(pub))}")
    console.print(f"signer fingerprint {fp}")


def _guess_kind(source: str) -> str:
    from bastion.data import DATASETS

    p = Path(source)
    if not p.exists():
        if source in DATASETS.names():
            return "dataset"
        raise ConfigError(f"{source} does not exist (and is not a built-in dataset: {', '.join(DATASETS.names())})")
    if p.is_dir():
        return "report" if (p / "results.json").is_file() else "dataset"
    if p.suffix.lower() in (".npz", ".csv"):
        return "dataset"
    return "model"


@registry_app.command("add")
def add(
    source: Annotated[
        str, typer.Argument(help="model file, dataset (built-in name, .npz, CSV, image folder) or report")
    ],
    registry: RegOpt = DEFAULT,
    kind: Annotated[str, typer.Option(help="auto, model, dataset or report")] = "auto",
    name: Annotated[str | None, typer.Option(help="artifact name (default: the card's name or the file's)")] = None,
    parent: Annotated[
        list[str] | None, typer.Option("--parent", help="extra parent, REF or ROLE=REF (repeatable)")
    ] = None,
    assessment: Annotated[
        Path | None, typer.Option(help="this model's assess report (folder or results.json): its verdict is recorded")
    ] = None,
    sign: SignOpt = None,
    sign_cert: SignCertOpt = None,
    sign_chain: SignChainOpt = None,
    password_env: PasswordOpt = None,
) -> None:
    """Register an artifact version; its lineage is read from what Bastion wrote beside it."""
    if kind not in ("auto", "model", "dataset", "report"):
        raise ConfigError(f"--kind must be auto, model, dataset or report, got {kind!r}")
    key = _key(sign, password_env, sign_cert, sign_chain)
    _torch_threads()
    kind = _guess_kind(source) if kind == "auto" else kind
    if assessment is not None and kind != "model":
        raise ConfigError("--assessment applies to models only")
    with _open(registry) as reg:
        if kind == "model":
            row = reg.add_model(source, name=name, parents=parent or (), assessment=assessment, sign_with=key)
        elif kind == "dataset":
            row = reg.add_dataset(source, name=name, parents=parent or (), sign_with=key)
        else:
            row = reg.add_report(source, name=name, sign_with=key)
        manifest = reg.manifest(row)
    lineage = ", ".join(f"{p.role} {p.id[:12]}" for p in manifest.parents) or "none recorded"
    signed = f"signed by {row.signer[:16]}…" if row.signer else "unsigned"
    console.print(
        f"added {row.kind} [bold]{escape(row.name)}@{row.version}[/] id {row.id} ({len(manifest.files)} files, "
        f"{signed}; lineage: {lineage})",
        highlight=False,
    )


@registry_app.command("import")
def import_(
    source: Annotated[Path, typer.Argument(help="a model file from elsewhere (pickles are scanned first)")],
    registry: RegOpt = DEFAULT,
    convert: Annotated[bool, typer.Option(help="convert a clean pickled checkpoint to safetensors")] = False,
    arch: Annotated[
        str | None, typer.Option(help="package.module:factory that rebuilds the module for converted weights")
    ] = None,
    name: Annotated[str | None, typer.Option(help="artifact name (default: the file's)")] = None,
    sign: SignOpt = None,
    sign_cert: SignCertOpt = None,
    sign_chain: SignChainOpt = None,
    password_env: PasswordOpt = None,
) -> None:
    """Scan a model from elsewhere and register it; a pickle that can run code is refused."""
    from bastion.registry import import_model

    key = _key(sign, password_env, sign_cert, sign_chain)
    _torch_threads()
    with _open(registry) as reg:
        row, scan = import_model(reg, source, convert=convert, arch=arch, name=name, sign_with=key)
        manifest = reg.manifest(row)
    how = "converted to safetensors" if manifest.transformation.name == "convert" else "registered as it is"
    console.print(
        f"scan: {scan.verdict}; {how}: [bold]{escape(row.name)}@{row.version}[/] id {row.id}", highlight=False
    )


@registry_app.command("scan")
def scan(
    files: Annotated[list[Path], typer.Argument(help="files to analyse (nothing is loaded)")],
    json_out: Annotated[Path | None, typer.Option("--json", help="write every finding here")] = None,
) -> None:
    """Analyse model files with fickling and modelscan; exit 1 if any can run code."""
    from bastion.registry import scan_file

    results = [scan_file(f) for f in files]
    table = Table("file", "format", "verdict", "findings")
    for r in results:
        colour = {"safe": "green", "not-pickle": "green", "unsafe": "yellow", "malicious": "red"}[r.verdict]
        table.add_row(escape(str(r.path)), r.format, f"[{colour}]{r.verdict}[/]", escape(r.reason()[:200]))
    console.print(table)
    if json_out is not None:
        json_out.write_text(json.dumps([r.to_dict() for r in results], indent=1))
    if any(not r.loadable for r in results):
        raise typer.Exit(1)


@registry_app.command("list")
def list_(
    registry: RegOpt = DEFAULT,
    kind: Annotated[str | None, typer.Option(help="model, dataset or report")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON rows (for scripts)")] = False,
) -> None:
    """List every artifact version."""
    if kind not in (None, "model", "dataset", "report"):
        raise ConfigError(f"--kind must be model, dataset or report, got {kind!r}")
    with _open(registry) as reg:
        rows = reg.rows(kind)
    if as_json:
        typer.echo(json.dumps([r.to_dict() for r in rows], indent=1))
        return
    table = Table()
    for col in ("id", "kind", "name", "version", "created", "bytes", "signer"):
        table.add_column(col, overflow="fold", min_width=len(col))
    for r in rows:
        table.add_row(
            r.id[:12], r.kind, escape(r.name), str(r.version), r.created, f"{r.size:,}", (r.signer or "-")[:12]
        )
    console.print(table)


@registry_app.command("show")
def show(
    ref: Annotated[str, typer.Argument(help="id, id prefix, NAME or NAME@VERSION")], registry: RegOpt = DEFAULT
) -> None:
    """Print an artifact's manifest (JSON) with its signer and the artifacts made from it."""
    with _open(registry) as reg:
        row = reg.resolve(ref)
        d = reg.manifest(row).to_dict()
        d = {
            "id": row.id,
            "signer": row.signer,
            **d,
            "children": [
                {"id": c.id, "kind": c.kind, "name": c.name, "version": c.version, "role": role}
                for c, role in reg.children(row.id)
            ],
        }
    typer.echo(json.dumps(d, indent=1))


@registry_app.command("verify")
def verify(
    refs: Annotated[list[str] | None, typer.Argument(help="artifacts to verify (default: every one)")] = None,
    registry: RegOpt = DEFAULT,
    trust: TrustOpt = None,
    trust_chain: TrustChainOpt = None,
    skip_signature: Annotated[
        bool, typer.Option(help="check files, manifest and lineage only (not who signed them)")
    ] = False,
    json_out: Annotated[Path | None, typer.Option("--json", help="write each result here")] = None,
) -> None:
    """Verify artifacts: every byte, file, the manifest, the lineage and the signature; exit 1 if any fails."""
    if not trust and not trust_chain and not skip_signature:
        raise ConfigError(
            "give the signers you trust with --trust KEY.pub or --trust-chain ROOT.pem (or --skip-signature to check "
            "content only)"
        )
    policy = _trust(trust, trust_chain)
    with _open(registry) as reg:
        targets = [reg.resolve(r).id for r in refs] if refs else [r.id for r in reg.rows()]
        results = [reg.verify(t, policy, require_signature=not skip_signature) for t in targets]
    for v in results:
        if v.ok:
            what = (
                "content and lineage (signature not checked)"
                if not v.signature_checked
                else f"signed by {(v.signer or '')[:16]}…"
            )
            console.print(f"[green]verified[/] {escape(v.name)}@{v.version} {v.id[:12]}: {what}", highlight=False)
        else:
            console.print(f"[red]FAILED[/] {escape(v.name)}@{v.version} {v.id[:12]}:", highlight=False)
            for p in v.problems:
                console.print(f"  - {escape(p)}", highlight=False)
    if json_out is not None:
        json_out.write_text(json.dumps([v.to_dict() for v in results], indent=1))
    if not results:
        err_console.print("the registry is empty: nothing was verified")
        raise typer.Exit(1)
    if any(not v.ok for v in results):
        raise typer.Exit(1)


@registry_app.command("sign")
def sign_(
    ref: Annotated[str, typer.Argument()],
    key: Annotated[Path, typer.Option("--key", help="private key (PEM)")],
    registry: RegOpt = DEFAULT,
    sign_cert: SignCertOpt = None,
    sign_chain: SignChainOpt = None,
    password_env: PasswordOpt = None,
) -> None:
    """Sign an artifact that was added unsigned (it must still match its manifest)."""
    k = _key(key, password_env, sign_cert, sign_chain)
    with _open(registry) as reg:
        row = reg.sign(ref, k)
    console.print(f"signed {escape(row.name)}@{row.version} {row.id[:12]} as {row.signer}", highlight=False)


@registry_app.command("lineage")
def lineage(ref: Annotated[str, typer.Argument()], registry: RegOpt = DEFAULT) -> None:
    """Show where an artifact came from (its ancestors) and what was made from it."""
    with _open(registry) as reg:
        node = reg.lineage(ref)
        kids = reg.children(node.row.id)

    def label(n: Any, role: str) -> str:
        r = n.row
        return f"[bold]{escape(r.name)}@{r.version}[/] {r.kind} {r.id[:12]} ({role})"

    def grow(tree: Tree, n: Any) -> None:
        for p in n.parents:
            grow(tree.add(label(p, p.role)), p)
        for m in n.missing:
            tree.add(f"[red]missing[/] {escape(m)}")

    root = Tree(label(node, "this artifact"))
    grow(root, node)
    console.print(root)
    for c, role in kids:
        console.print(f"made from it: {escape(c.name)}@{c.version} {c.kind} {c.id[:12]} (as {role})", highlight=False)


@registry_app.command("export")
def export(
    ref: Annotated[str, typer.Argument()],
    out: Annotated[Path, typer.Option("--out", "-o", help="a folder (artifact) or, with --bom, a .json file")],
    registry: RegOpt = DEFAULT,
    bom: Annotated[bool, typer.Option(help="write the model's CycloneDX ML-BOM instead of its files")] = False,
    trust: TrustOpt = None,
    trust_chain: TrustChainOpt = None,
) -> None:
    """Export an artifact (files, manifest, signature) or a model's ML-BOM; it is verified first."""
    policy = _trust(trust, trust_chain)
    with _open(registry) as reg:
        check = reg.verify(ref, policy, require_signature=bool(trust or trust_chain))
        if not check.ok:
            console.print(f"[red]refusing to export[/] {escape(ref)}: it failed verification", highlight=False)
            for p in check.problems:
                console.print(f"  - {escape(p)}", highlight=False)
            raise typer.Exit(1)
        if bom:
            from bastion.registry import write_bom

            if out.suffix != ".json":
                raise ConfigError(f"--bom writes CycloneDX JSON; name the output .json (got {out.name})")
            written = write_bom(reg, check.id, out)
            console.print(f"ML-BOM (CycloneDX 1.6, schema-valid): {escape(str(written))}", highlight=False)
        else:
            written = reg.export(check.id, out)
            console.print(f"exported to {escape(str(written))}", highlight=False)
