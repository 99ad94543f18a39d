"""JobConfig: the key contract, YAML + --set + flags precedence, one-line errors, shipped configs."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipeline.config import JobConfig, load_config
from pipeline.errors import ConfigError

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
# rayjob.yaml is a KubeRay manifest that carries a job config, not a job config itself
CONFIGS = sorted(p for p in CONFIG_DIR.glob("*.yaml") if p.name != "rayjob.yaml")
CONTRACT = {
    "manifest", "output", "stylizer", "style", "style_column", "style_manifest", "style_seed", "alpha",
    "preserve_color", "max_side", "encoder_weights", "weights", "format", "quality", "batch_size", "actors",
    "gpus_per_actor", "cpus_per_actor", "device", "metrics", "max_retries", "allowed_schemes", "storage_options",
    "seed",
}  # fmt: skip
BASE = ["manifest=/data/m.parquet", "output=/data/out"]


def test_top_level_keys_are_the_contract():
    # scheduled jobs depend on these names: adding is fine, renaming or removing is not
    assert set(JobConfig.model_fields) >= CONTRACT
    assert all(f.description for f in JobConfig.model_fields.values())


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_are_valid(path):
    cfg = load_config(str(path))
    assert cfg.manifest and cfg.output
    assert JobConfig(**cfg.model_dump()) == cfg  # the run summary's dump round-trips


def test_rayjob_manifest_runs_the_job_entrypoint():
    manifest = yaml.safe_load((CONFIG_DIR / "rayjob.yaml").read_text())
    assert manifest["kind"] == "RayJob" and "jobs.run_job" in manifest["spec"]["entrypoint"]


def test_shipped_configs_exist():
    assert {p.name for p in CONFIGS} >= {"photo-archive.yaml", "dataset-generation.yaml"}


def test_defaults():
    cfg = load_config(None, BASE)
    assert (cfg.stylizer, cfg.style, cfg.alpha, cfg.format, cfg.quality) == ("dumoulin", "0", 1.0, "jpeg", 92)
    assert cfg.allowed_schemes == ["", "file", "gcs", "gs", "s3"]
    assert cfg.storage_options == {} and cfg.max_side is None and cfg.metrics is True


def test_precedence_yaml_then_set_then_flags(tmp_path):
    p = tmp_path / "job.yaml"
    p.write_text("manifest: /m.parquet\noutput: /out\nbatch_size: 2\nquality: 80\nalpha: 0.5\n")
    cfg = load_config(str(p), ["batch_size=8", "quality=70"], quality=60, alpha=None)
    assert (cfg.batch_size, cfg.quality, cfg.alpha) == (8, 60, 0.5)


def test_set_values_parse_as_yaml_scalars_but_text_stays_text():
    cfg = load_config(
        None,
        [*BASE, "metrics=false", "max_side=null", "gpus_per_actor=0.5", "style=3:0.5,12:0.5", "stylizer=adain",
         "weights=null", "allowed_schemes=[s3, file, '']", "storage_options.endpoint_url=http://127.0.0.1:9000",
         "storage_options.client_kwargs.region_name=eu-west-1"],
    )  # fmt: skip
    assert cfg.metrics is False and cfg.max_side is None and cfg.gpus_per_actor == 0.5
    assert cfg.style == "3:0.5,12:0.5" and cfg.weights is None
    assert cfg.allowed_schemes == ["", "file", "s3"]
    assert cfg.storage_options == {
        "endpoint_url": "http://127.0.0.1:9000",
        "client_kwargs": {"region_name": "eu-west-1"},
    }
    assert load_config(None, [*BASE, "style=7"]).style == "7"
    assert load_config(None, [*BASE, "format=JPG"]).format == "jpeg"


def test_unquoted_yaml_style_is_refused(tmp_path):
    p = tmp_path / "job.yaml"
    p.write_text("manifest: /m\noutput: /o\nstyle: 3:0.5\n")  # YAML 1.1 reads this as 180.5
    with pytest.raises(ConfigError, match="quote the style spec"):
        load_config(str(p))
    p.write_text("manifest: /m\noutput: /o\nstyle: 7\n")
    assert load_config(str(p)).style == "7"


@pytest.mark.parametrize(
    ("override", "pattern"),
    [
        ("qualty=90", r"qualty: unknown key \(did you mean 'quality'\?\)"),
        ("quality=101", r"quality: Input should be less than or equal to 100 \(got 101\)"),
        ("alpha=1.5", r"alpha: .*less than or equal to 1"),
        ("batch_size=0", r"batch_size: .*greater than or equal to 1"),
        ("actors=two", r"actors: .*valid integer"),
        ("preserve_color=sepia", r"preserve_color: .*'none', 'luminance' or 'histogram'"),
        ("format=gif", r"format: "),
        ("device=tpu", r"device: must be"),
        ("max_side=8", r"max_side: .*greater than or equal to 16"),
        ("style=", r"style: "),
        ("style=a.jpg:0.5,,", None),
        ("manifest=http://evil/m.parquet", r"manifest: scheme 'http'"),
        ("output=memory://out", r"^invalid job config: output: scheme 'memory' of 'memory://out' is not allowed[^{]*$"),
        ("style_column=style", None),
        ("allowed_schemes=[]", r"allowed_schemes: .*at least one"),
        ("nonsense", r"--set wants key=value"),
        ("=3", r"empty key"),
    ],
)
def test_errors_are_one_line(override, pattern):
    if pattern is None:
        load_config(None, [*BASE, override])  # valid
        return
    with pytest.raises(ConfigError, match=pattern) as info:
        load_config(None, [*BASE, override])
    assert "\n" not in str(info.value)


def test_exclusive_style_sources():
    with pytest.raises(ConfigError, match="exclusive"):
        load_config(None, [*BASE, "style_column=s", "style_manifest=/styles.parquet"])


def test_http_allowed_when_configured():
    cfg = load_config(None, [*BASE, "allowed_schemes=[http, https, '']", "manifest=https://host/m.parquet"])
    assert cfg.manifest == "https://host/m.parquet"


def test_missing_required_and_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="manifest: Field required"):
        load_config(None, ["output=/o"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("manifest: [unclosed\n")
    with pytest.raises(ConfigError, match="invalid YAML at line"):
        load_config(str(bad))
    bad.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(str(bad))
    with pytest.raises(ConfigError, match="not found"):
        load_config(str(tmp_path / "missing.yaml"))


def test_direct_construction_raises_config_error():
    with pytest.raises(ConfigError, match="quality"):
        JobConfig(manifest="/m", output="/o", quality=0)


def test_public_dict_masks_secrets():
    cfg = load_config(None, [*BASE, "storage_options={key: AKIA, secret: s3cr3t, endpoint_url: http://x}"])
    pub = cfg.public_dict()
    assert pub["storage_options"] == {"key": "***", "secret": "***", "endpoint_url": "http://x"}
    assert cfg.storage_options["secret"] == "s3cr3t"  # the real config keeps them
