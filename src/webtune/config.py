"""Structured configs for every config group, registered with Hydra's ConfigStore.

Each YAML file in `conf/<group>/` is validated against the dataclass here: an unknown key or a
wrong type fails naming the key (and the CLI adds the file), instead of being silently ignored.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from types import SimpleNamespace
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

from .errors import WebtuneError


def choices(name: str, *values: str) -> type[StrEnum]:
    """An enum-like config value: Hydra rejects anything else while composing, naming the key and
    the allowed values; members compare equal to their strings (`cfg.model.method == "lora"`)."""
    return StrEnum(name, [(v, v) for v in values], module=__name__)


FileFormat = choices("FileFormat", "auto", "json", "jsonl", "csv", "html", "vtt", "srt")
SnapshotFormat = choices("SnapshotFormat", "json", "jsonl", "ndjson", "csv")
ScrapeMode = choices("ScrapeMode", "auto", "sync", "async")
FetchVia = choices("FetchVia", "direct", "brightdata_crawl")
PageSplit = choices("PageSplit", "none", "section")
SourceKind = choices("SourceKind", "files", "brightdata", "brightdata_dataset", "urls", "hf")
Role = choices("Role", "system", "user", "assistant")
DedupeEngine = choices("DedupeEngine", "rensa", "datasketch")
Executor = choices("Executor", "local", "ray")
Overflow = choices("Overflow", "truncate", "drop", "split")
Grounding = choices("Grounding", "trim", "drop", "flag", "off")
ShortPolicy = choices("ShortPolicy", "cap", "oversample")
ModelKind = choices("ModelKind", "hf", "openai")
Method = choices("Method", "full", "lora", "qlora")
Dtype = choices("Dtype", "auto", "float32", "bfloat16", "float16")
Attention = choices("Attention", "auto", "sdpa", "eager", "flex_attention", "flash_attention_2")
ResponseFormat = choices("ResponseFormat", "auto", "json_schema", "json_object", "none")
OnCap = choices("OnCap", "refuse", "partial")
EvalEngine = choices("EvalEngine", "transformers", "vllm")


# ---------------------------------------------------------------- source
@dataclass
class FilesConfig:
    paths: list[str] = field(default_factory=list)   # files, directories or globs
    format: FileFormat = FileFormat.auto  # auto|json|jsonl|csv|html|vtt|srt
    root: Optional[str] = None      # ids are relative to this (default: common parent)
    json_key: Optional[str] = None  # JSON object holding the array at this key
    csv_delimiter: str = ","
    csv_list_separator: str = " | "  # list-valued cells, e.g. features
    csv_list_fields: list[str] = field(default_factory=list)
    csv_number_fields: list[str] = field(default_factory=list)  # cells turned into numbers
    encoding: str = "utf-8"
    window_seconds: float = 0.0     # transcripts: cut into windows of this length (0: whole)
    max_record_bytes: int = 4_000_000


@dataclass
class BrightDataConfig:
    dataset_id: str = ""
    inputs: list[Any] = field(default_factory=list)   # inline list of input objects
    inputs_file: Optional[str] = None                  # or a JSON/JSONL file of them
    type: Optional[str] = None          # discover_new
    discover_by: Optional[str] = None
    limit_per_input: Optional[int] = None
    include_errors: bool = True
    format: SnapshotFormat = SnapshotFormat.jsonl
    api_key_env: str = "BRIGHTDATA_API_TOKEN"
    base_url: str = "https://api.brightdata.com"
    poll_interval: float = 10.0
    poll_timeout: float = 3600.0
    snapshot_id: Optional[str] = None   # use an existing snapshot instead of triggering
    batch_size: int = 0                 # download in parts of this many records (0: one request)
    primary_fields: list[str] = field(default_factory=lambda: ["title", "url"])
    timeout: float = 60.0
    retry_backoff: float = 2.0          # seconds between GET retries: immediate, then ~2x and 4x this
    rate_limit_wait: float = 2.0        # after a 429 without Retry-After wait this, then 2x, 4x, 8x, 16x (5 waits)
    mode: ScrapeMode = ScrapeMode.auto  # auto|sync|async: auto sends <= 20 inputs to /scrape (202: polled)
    limit_multiple_results: Optional[int] = None   # cap on the total number of records collected
    custom_output_fields: Optional[list[str]] = None   # None: the fields the run's templates read; []: all
    price_per_1k: Optional[float] = None   # USD per 1,000 records, for the estimate shown before paying
    max_cost: Optional[float] = None       # refuse to start above this estimate (USD; needs price_per_1k)
    max_records: Optional[int] = None      # refuse to start above this many estimated records
    filter: Optional[Any] = None           # marketplace (kind brightdata_dataset): the API's filter object
    filter_files: list[str] = field(default_factory=list)   # marketplace: value-list files named in the filter
    records_limit: Optional[int] = None    # marketplace: at most this many records (a sample: a small one)
    requests_per_hour: int = 120           # marketplace: the API's budget for all calls


@dataclass
class UrlsConfig:
    urls: list[str] = field(default_factory=list)
    urls_file: Optional[str] = None
    user_agent: str = "webtune/0.1 (+https://github.com/webtune/webtune)"
    delay: float = 1.0              # seconds between requests to one host (robots crawl-delay wins if longer)
    concurrency: int = 4
    retries: int = 3
    timeout: float = 20.0
    max_bytes: int = 5_000_000
    cache_dir: str = "runs/.cache/http"
    respect_robots: bool = True
    fetch: FetchVia = FetchVia.direct  # direct|brightdata_crawl (the Crawl API; settings under source.brightdata)


@dataclass
class PagesConfig:
    """HTML pages (files and urls sources): one record per page, or one sub-record per section."""
    split: PageSplit = PageSplit.none  # none|section: sub-records `<page id>/s<N>` split by heading
    min_chars: int = 200            # a shorter section is merged into its neighbour
    max_chars: int = 1200           # a longer one is split between blocks (~350 tokens: fits mix.max_seq_len 512)


@dataclass
class HFConfig:
    path: str = ""                  # anything datasets.load_dataset opens
    name: Optional[str] = None
    split: str = "train"
    data_files: Optional[Any] = None


@dataclass
class SourceConfig:
    kind: SourceKind = SourceKind.files  # files|brightdata|brightdata_dataset|urls|hf
    name: str = MISSING             # the source name used in record ids
    group_field: Optional[str] = None   # records sharing this field's value share a split
    files: FilesConfig = field(default_factory=FilesConfig)
    brightdata: BrightDataConfig = field(default_factory=BrightDataConfig)
    urls: UrlsConfig = field(default_factory=UrlsConfig)
    hf: HFConfig = field(default_factory=HFConfig)
    pages: PagesConfig = field(default_factory=PagesConfig)
    key_field: Optional[str] = None     # the record's stable key (url, asin, id): what `webtune refresh` diffs by
    churn_fields: list[str] = field(default_factory=list)  # fields that only churn (prices, counts): not a change
    acquisition: Optional[str] = None   # a label asking for a fresh acquisition (set by `webtune refresh`)


# ---------------------------------------------------------------- template
@dataclass
class TurnConfig:
    role: Role = MISSING  # system|user|assistant
    template: Optional[str] = None  # a Jinja file under templates/
    text: Optional[str] = None      # or inline Jinja


@dataclass
class TaskConfig:
    name: str = MISSING
    system: Optional[str] = None    # system prompt (Jinja, inline)
    user: Optional[Any] = None      # Jinja file for the user turn, or a teacher: {teacher: prompt.j2, n: 3}
    assistant: Optional[str] = None  # Jinja file for the assistant turn
    turns: list[TurnConfig] = field(default_factory=list)  # or a multi-turn list
    input_schema: Optional[str] = None  # JSON Schema file the record must satisfy
    fields: list[str] = field(default_factory=list)        # fields the task needs
    checks: list[str] = field(default_factory=list)        # eval task checks: json, mentions:<regex on the prompt>
    grounding_fields: list[str] = field(default_factory=list)  # fields an answer should realise (eval's coverage)


@dataclass(frozen=True)
class TeacherTurn:
    """A user turn the teacher writes (`user: {teacher: templates/docs_qa/question_prompt.j2, n: 3}`):
    the prompt file is rendered with the record's fields and sent to `teacher`, which answers with
    `n` requests; each becomes an example whose target is the task's own assistant template."""

    prompt: str                 # Jinja file: what the teacher is asked (the section text, once)
    n: int = 3                  # requests (questions) asked for, in one call
    answers: bool = False       # the teacher writes the answers too: NOT grounded by construction


def teacher_turn(task) -> Optional[TeacherTurn]:
    """The task's teacher turn, or None when its user turn is a template file; a malformed one
    fails naming the task and key."""
    user = task.get("user") if hasattr(task, "get") else getattr(task, "user", None)
    if user is None or isinstance(user, str):
        return None
    user = container(user)
    name = task.get("name") if hasattr(task, "get") else getattr(task, "name", "?")
    where = f"template task {name!r}: user"
    if not isinstance(user, dict):
        raise WebtuneError(f"{where} must be a template file or {{teacher: <prompt file>, n: 3}}, got {user!r}")
    unknown = sorted(set(user) - {"teacher", "n", "answers"})
    if unknown:
        raise WebtuneError(f"{where}.{unknown[0]} is not a teacher setting; use teacher (the prompt file), "
                           f"n (requests asked for) and answers (true: the teacher writes the answers too)")
    prompt, n, answers = user.get("teacher"), user.get("n", 3), user.get("answers", False)
    if not isinstance(prompt, str) or not prompt:
        raise WebtuneError(f"{where}.teacher must name the prompt file (e.g. templates/docs_qa/question_prompt.j2)")
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 20:
        raise WebtuneError(f"{where}.n must be a whole number from 1 to 20, got {n!r}")
    if not isinstance(answers, bool):
        raise WebtuneError(f"{where}.answers must be true or false, got {answers!r}")
    return TeacherTurn(prompt, n, answers)


@dataclass
class TemplateConfig:
    name: str = MISSING
    tasks: list[TaskConfig] = field(default_factory=list)


# ---------------------------------------------------------------- prepare
@dataclass
class CleanConfig:
    fix_unicode: bool = True        # ftfy: mojibake
    strip_html: bool = True         # markup inside fields -> text
    normalize_whitespace: bool = True
    fields: list[str] = field(default_factory=list)  # empty: the fields the templates, filters and dedupe read


@dataclass
class FiltersConfig:
    required: list[str] = field(default_factory=list)
    length_field: Optional[str] = None  # the text filters look at (not a string: the dedupe text)
    min_chars: int = 0
    max_chars: int = 0              # 0: no limit
    min_words: int = 0
    max_words: int = 0
    languages: list[str] = field(default_factory=list)  # empty: language filter off
    language_confidence: float = 0.5
    max_dup_line_share: float = 1.0
    max_dup_para_share: float = 1.0
    max_top_ngram_share: float = 1.0
    top_ngram_n: int = 2
    max_symbol_word_ratio: float = 1.0
    blocklist: list[str] = field(default_factory=list)   # regexes
    mask_pii: bool = False


@dataclass
class DedupeConfig:
    exact: bool = True
    near: bool = True
    fields: list[str] = field(default_factory=list)  # text the hashes are computed on
    shingle: int = 5                # word shingles
    num_perm: int = 128
    threshold: float = 0.8
    engine: DedupeEngine = DedupeEngine.rensa  # rensa|datasketch


@dataclass
class PrepareRayConfig:
    address: Optional[str] = None   # null: a local Ray started for the run; auto: the running cluster; ray://host:10001
    num_cpus: int = 0               # CPUs of the local Ray (0: every core); ignored when connecting
    object_store_mb: int = 0        # object store of the local Ray (0: Ray's default)
    host: str = "127.0.0.1"         # the address the local Ray binds (loopback unless other nodes join)
    workers: int = 0                # actors in the map pool (0: the cluster's CPUs)
    shards: int = 0                 # shards of the input (0: one per worker); the output does not depend on it


@dataclass
class PrepareConfig:
    executor: Executor = Executor.local  # local|ray: the same bytes out of either (`pip install 'webtune[ray]'`)
    ray: PrepareRayConfig = field(default_factory=PrepareRayConfig)
    workers: int = 0                # 0: one per core
    clean: CleanConfig = field(default_factory=CleanConfig)
    filters: FiltersConfig = field(default_factory=FiltersConfig)
    dedupe: DedupeConfig = field(default_factory=DedupeConfig)
    validate_output: bool = True
    grounding: Grounding = Grounding.trim   # trim|drop|flag|off: targets that state what their prompt does not (grounding/targets.py)
    grounding_min_kept: float = 0.5     # trim: drop the example when less than this share of its target is left


# ---------------------------------------------------------------- mix
@dataclass
class GeneralConfig:
    enabled: bool = True
    source: SourceConfig = field(default_factory=SourceConfig)
    template: TemplateConfig = field(default_factory=TemplateConfig)
    test_files: list[str] = field(default_factory=list)  # a general held-out set, scored by eval


@dataclass
class PackingConfig:
    enabled: bool = True
    overflow: Overflow = Overflow.drop  # drop|truncate|split (examples longer than max_seq_len); see conf/mix/default.yaml


@dataclass
class DecontamConfig:
    enabled: bool = True
    ngram: int = 13                 # word n-grams shared with a held-out example ...
    min_share: float = 0.5          # ... at least this share of its n-grams removes the training example (0: any one)
    threshold: float = 0.8          # and so does a near-duplicate (MinHash LSH at this Jaccard); 0: n-grams only


@dataclass
class MixConfig:
    general: GeneralConfig = field(default_factory=GeneralConfig)
    general_share: float = 0.3      # target share of general data in training tokens
    short_policy: ShortPolicy = ShortPolicy.cap  # cap|oversample: when a side has fewer tokens than its share needs
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    seed: int = 0
    max_seq_len: int = 512
    packing: PackingConfig = field(default_factory=PackingConfig)
    decontam: DecontamConfig = field(default_factory=DecontamConfig)  # mix/decontam.py: against every held-out set


# ---------------------------------------------------------------- model
@dataclass
class LoraConfig:
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    exclude_modules: Optional[str] = None  # regex of modules LoRA leaves alone (Gemma 3 4B: the vision tower)
    trainable_tokens: list[str] = field(default_factory=list)  # their embedding rows train too (a pretrained base's turn markers)


@dataclass
class TrainConfig:
    epochs: float = 1.0
    max_steps: int = -1
    learning_rate: float = 2e-4
    batch_tokens: int = 4096        # tokens per optimizer step (packed rows x max_seq_len)
    grad_accum: int = 1
    warmup_ratio: float = 0.05
    weight_decay: float = 0.0
    lr_scheduler: str = "cosine"
    eval_steps: int = 0             # 0: evaluate at the end of each epoch
    save_steps: int = 0             # 0: save at the end of each epoch
    logging_steps: int = 5
    gradient_checkpointing: bool = False
    report_to: list[str] = field(default_factory=list)
    seed: int = 0
    threads: int = 0                # CPU threads (0: torch's default)


@dataclass
class ModelConfig:
    kind: ModelKind = ModelKind.hf  # hf|openai
    name: str = MISSING             # short name used in reports and the registry
    name_or_path: str = MISSING     # hub id or local directory, loaded with from_pretrained
    tokenizer: Optional[str] = None  # default: name_or_path
    gguf_file: Optional[str] = None  # a GGUF file in name_or_path (or a path): converted once into the model cache
    method: Method = Method.full  # full|lora|qlora
    dtype: Dtype = Dtype.auto  # auto|float32|bfloat16|float16
    attn_implementation: Attention = Attention.sdpa  # auto|sdpa|eager|flex_attention|flash_attention_2 (auto: flash-attn if installed)
    chat_template: Optional[str] = None  # a Jinja file, for base models without one
    eos_token: Optional[str] = None  # the token ending an assistant turn, when not the tokenizer's eos (Gemma: <end_of_turn>)
    lora: LoraConfig = field(default_factory=LoraConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    merge_adapter: bool = False
    init_adapter: Optional[str] = None  # start LoRA from this adapter folder (a refresh warm-starts from the promoted one)
    # openai backend
    api_key_env: str = "OPENAI_API_KEY"
    base_url: Optional[str] = None
    n_epochs: Any = "auto"
    batch_size: Any = "auto"
    learning_rate_multiplier: Any = "auto"
    suffix: Optional[str] = None
    metadata: dict[str, str] = field(default_factory=dict)
    poll_interval: float = 10.0
    max_retries: int = 2                # the openai SDK's own retries (no second retry layer)
    price_per_1k_tokens: Optional[float] = None  # training price override for the cost estimate
    max_tokens_per_example: Optional[int] = None


# ---------------------------------------------------------------- eval
@dataclass
class JudgeConfig:
    enabled: bool = False
    model: str = "gpt-4o-mini"
    base_url: Optional[str] = None
    api_key_env: str = "OPENAI_API_KEY"
    rubric: str = "Which answer better completes the task for the user? Consider accuracy, fluency and fit to the request."
    mode: str = "pairwise"           # pairwise: base vs tuned, both orders | claims: each answer's claims vs its prompt
    max_pairs: int = 20              # pairs judged (claims: prompts checked, each model's answer)
    price_per_1k_tokens: float = 0.0006
    max_tokens: int = 200            # judge reply length (also in the cost estimate)
    concurrency: int = 4
    max_retries: int = 2
    timeout: float = 60.0


@dataclass
class EvalVllmConfig:
    """eval.engine=vllm: where vLLM comes from (docs/serving.md, "Evaluate on vLLM")."""
    command: Optional[str] = None    # the `vllm` executable or its venv (null: $WEBTUNE_VLLM, ./.venv-vllm, PATH)
    url: Optional[str] = None        # an already running vLLM server to use instead of starting one
    kv_cache_gib: float = 1.0        # the started child's KV cache (vLLM-CPU would take 92% of RAM)


@dataclass
class EvalConfig:
    samples: int = 6                # side-by-side generations in the report
    max_new_tokens: int = 96
    generation_examples: int = 32   # test prompts scored with ROUGE-L/chrF/BLEU
    batch_size: int = 8
    max_general_regression: float = 0.5  # flag a regression if general loss rises by more (nats)
    min_domain_gain: float = 0.0
    max_examples: int = 200         # a seeded sample of at most this many per test set (0: every one)
    seed: int = 0                   # the sample and the paired bootstrap
    resamples: int = 2000           # paired bootstrap resamples per interval
    compare_to: Optional[str] = None  # a registry model NAME: its promoted version is scored too
    # how much worse a measure may get before a significant difference counts (its whole interval beyond it)
    margins: dict[str, float] = field(default_factory=lambda: {
        "domain_loss": 0.02, "general_loss": 0.05, "old_loss": 0.02, "chrF": 1.0, "rougeL": 1.0,
        "coverage": 0.05, "parent_f": 0.02})
    benchmarks: list[str] = field(default_factory=list)  # JSONL (messages or prompt/answer): mix removes overlapping training examples
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    engine: EvalEngine = EvalEngine.transformers  # greedy generations on transformers | vllm (losses: transformers)
    vllm: EvalVllmConfig = field(default_factory=EvalVllmConfig)


# ---------------------------------------------------------------- refresh
@dataclass
class RefreshConfig:
    """Set by `webtune refresh NAME`: this run refreshes the promoted version of a registered model."""
    model: Optional[str] = None      # NAME@vN being refreshed (null: an ordinary run)
    version_dir: Optional[str] = None  # its registry folder (config, frozen test set, record keys)
    replay_share: float = 0.3        # share of unchanged training records trained on again
    from_base: bool = False          # train from the base model instead of the promoted adapter
    promote: bool = True             # promote the candidate when the evidence says it is better


# ---------------------------------------------------------------- teacher
@dataclass
class TeacherJudgeConfig:
    enabled: bool = False           # score each question: answered by the section? self-contained?
    threshold: float = 0.5          # both scores (0..1) must reach this, else teacher:judge_rejected
    model: Optional[str] = None     # default: the teacher's model, on the same endpoint


@dataclass
class TeacherConfig:
    """An OpenAI-compatible chat endpoint that writes prompts (`user: {teacher: ...}` in a template)."""

    base_url: Optional[str] = "http://127.0.0.1:8000/v1"   # null: OpenAI
    model: str = "default"
    api_key_env: str = "OPENAI_API_KEY"   # a loopback endpoint needs no key
    temperature: float = 0.7
    top_p: float = 1.0
    seed: Optional[int] = 0
    max_tokens: int = 400           # per reply (also the cost estimate's ceiling)
    response_format: ResponseFormat = ResponseFormat.auto  # auto: json_schema, dropped if the server refuses it
    max_concurrency: int = 4        # requests in flight
    timeout: float = 120.0
    max_retries: int = 8            # the openai SDK's own retries of 429/5xx (Retry-After, else backoff)
    price_input_per_1m: Optional[float] = None    # USD per 1M input tokens, for the plan
    price_output_per_1m: Optional[float] = None   # USD per 1M output tokens
    max_requests: Optional[int] = None   # refuse (before any request) a plan with more requests
    max_cost: Optional[float] = None     # refuse a plan above this estimate (USD); also stops a run that reaches it
    on_cap: OnCap = OnCap.refuse     # refuse|partial: ask what fits, the rest rejected as teacher:cap_reached
    dedupe_threshold: float = 0.8    # near-duplicate questions (word-set Jaccard, across sections); 0: exact only
    judge: TeacherJudgeConfig = field(default_factory=TeacherJudgeConfig)


# ---------------------------------------------------------------- registry
@dataclass
class RegistryConfig:
    path: str = "runs/registry"
    auto_register: bool = False
    name: Optional[str] = None      # default: the run name


@dataclass
class WebtuneConfig:
    name: str = MISSING
    runs_dir: str = "runs"
    source: SourceConfig = MISSING
    template: TemplateConfig = MISSING
    mix: MixConfig = MISSING
    model: ModelConfig = MISSING
    eval: EvalConfig = MISSING
    prepare: PrepareConfig = field(default_factory=PrepareConfig)
    registry: RegistryConfig = field(default_factory=RegistryConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    refresh: RefreshConfig = field(default_factory=RefreshConfig)


def register_configs() -> None:
    cs = ConfigStore.instance()
    cs.store(name="webtune_schema", node=WebtuneConfig)
    cs.store(group="source", name="schema", node=SourceConfig)
    cs.store(group="template", name="schema", node=TemplateConfig)
    cs.store(group="mix", name="schema", node=MixConfig)
    cs.store(group="model", name="schema", node=ModelConfig)
    cs.store(group="eval", name="schema", node=EvalConfig)
    cs.store(group="teacher", name="schema", node=TeacherConfig)


def plain(node):
    """A config node as nested SimpleNamespaces: OmegaConf attribute access costs microseconds, and
    the per-record code reads thresholds millions of times."""
    if OmegaConf.is_config(node):
        node = OmegaConf.to_container(node, resolve=True)
    if isinstance(node, dict):
        return SimpleNamespace(**{k: plain(v) for k, v in node.items()})
    return node


def container(value):
    """An OmegaConf node as plain lists and dicts (interpolations resolved); anything else unchanged."""
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
