"""sft()'s signature and the documented parameter dicts come from the one definition in hpc_sft.config.spec."""
import inspect

import hpc_sft
from hpc_sft.algorithms import SFTAlgorithm
from hpc_sft.backends.instructlab.backend import InstructLabTrainingSFTBackend
from hpc_sft.config import spec
from tests.helpers import REPO

# The seed (training_hub) sft() signature, in order; all defaults None except backend.
SEED = ["model_path", "data_path", "ckpt_output_dir", "backend", "num_epochs", "effective_batch_size",
        "learning_rate", "max_seq_len", "max_tokens_per_gpu", "data_output_dir", "save_samples", "warmup_steps",
        "accelerate_full_state_at_epoch", "checkpoint_at_epoch", "is_pretraining", "block_size",
        "document_column_name", "nproc_per_node", "nnodes", "node_rank", "rdzv_id", "rdzv_endpoint"]


def test_signature_is_seed_plus_hpc_parameters():
    params = inspect.signature(hpc_sft.sft).parameters
    names = list(params)
    assert names == SEED + ["executor", "slurm", "sweep", "device", "settings_changed", "full_state_every_min",
                            "keep_full_states", "tracking", "backend_kwargs"]
    assert params["backend_kwargs"].kind is inspect.Parameter.VAR_KEYWORD
    for name in SEED[:3]:
        assert params[name].default is inspect.Parameter.empty
    assert params["backend"].default == "instructlab-training"
    assert all(params[n].default is None for n in SEED[4:])
    assert params["executor"].default == "local" and params["device"].default is None


def test_signature_equals_the_one_definition():
    assert inspect.signature(hpc_sft.sft) == spec.signature()
    assert [p.name for p in spec.PARAMS] == list(inspect.signature(hpc_sft.sft).parameters)[:-1]
    assert [f for f in spec.SFTConfig.__dataclass_fields__] == [p.name for p in spec.PARAMS] + ["backend_kwargs"]


def test_documented_parameter_dicts():
    algo = SFTAlgorithm(backend=InstructLabTrainingSFTBackend())
    assert algo.get_required_params() == {
        "model_path": str, "data_path": str, "ckpt_output_dir": str, "num_epochs": int,
        "effective_batch_size": int, "learning_rate": float, "max_seq_len": int, "max_batch_len": int}
    assert algo.get_optional_params() == {
        "backend": str, "data_output_dir": str, "save_samples": int, "warmup_steps": int, "is_pretraining": bool,
        "block_size": int, "document_column_name": str, "checkpoint_at_epoch": bool,
        "accelerate_full_state_at_epoch": bool, "nproc_per_node": int, "nnodes": int, "node_rank": int,
        "rdzv_id": int, "rdzv_endpoint": str}


def test_create_algorithm_default_and_errors():
    algo = hpc_sft.create_algorithm("sft")
    assert isinstance(algo, SFTAlgorithm) and isinstance(algo.backend, InstructLabTrainingSFTBackend)
    for args, word in ((("osft",), "sft"), (("sft", "nope"), "instructlab-training")):
        try:
            hpc_sft.create_algorithm(*args)
        except ValueError as exc:
            assert word in str(exc)
        else:
            raise AssertionError(f"create_algorithm{args} did not fail")


def test_generated_docs_are_up_to_date():
    from hpc_sft.docgen import generated

    for path, text in generated(REPO).items():
        assert path.read_text() == text, f"{path} is stale; regenerate with: python -m hpc_sft.docgen"


def test_every_slurm_option_is_documented():
    import dataclasses

    from hpc_sft.config.slurm_options import DOCS, SlurmOptions

    assert list(DOCS) == [f.name for f in dataclasses.fields(SlurmOptions)]


def test_parameter_reference_doc_is_generated_from_spec():
    doc = (REPO / "docs" / "parameters.md").read_text()
    assert doc == spec.docs_markdown(), "regenerate with: python -m hpc_sft.docgen"
    for p in spec.PARAMS:
        assert f"`{p.name}`" in doc
