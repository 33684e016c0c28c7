"""The mix stage tokenizes with the model config's tokenizer: its key and its view of the config hold
every key that picks that tokenizer, `model.gguf_file` included."""
from pathlib import Path

from webtune.hydra_setup import compose, setup
from webtune.runner import stage_config, stage_key
from webtune.stages import build_stages

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "tiny_model"


def mix_key(cfg, run_dir: Path):
    [mix] = [s for s in build_stages() if s.name == "mix"]
    return stage_key(mix, cfg, run_dir, versions={})[0], stage_config(mix, cfg)


def test_model_gguf_file_is_in_the_mix_key_and_what_the_stage_sees(tmp_path):
    setup()
    folder = tmp_path / "ggufs"
    folder.mkdir()
    for name in ("a.gguf", "b.gguf"):
        (folder / name).write_bytes(name.encode() * 100)
    keys = {}
    for name in ("a.gguf", "b.gguf"):
        cfg = compose([f"model.name_or_path={folder}", f"model.gguf_file={name}"])
        keys[name], view = mix_key(cfg, tmp_path)
        assert view.model.gguf_file == name          # the stage loads the GGUF's tokenizer, not the folder's
    assert keys["a.gguf"] != keys["b.gguf"]
    (folder / "b.gguf").write_bytes(b"another model")     # the file's bytes count, not only its name
    assert mix_key(compose([f"model.name_or_path={folder}", "model.gguf_file=b.gguf"]), tmp_path)[0] != keys["b.gguf"]
    plain = compose([f"model.name_or_path={FIXTURE}"])
    assert mix_key(plain, tmp_path)[1].model.gguf_file is None
