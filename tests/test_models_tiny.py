import inspect
from pathlib import Path

import pytest
import torch
from diffusers.models.attention_processor import JointAttnProcessor2_0

from r3.models.interface import ImageCondition, SamplingConfig, TextQuery, UnifiedModel
from r3.models.losses import ImageBatch, TextBatch, drop_condition, flow_matching_loss, text_loss
from r3.models.tiny import TinyConfig, TinyUnifiedModel
from r3.models.tokenizer import build_tokenizer
from r3.world.render import render
from r3.world.scene import Scene, SceneObject, cell_center

WORDS = "a one two red blue green circle circles square squares left right of above below".split()
WORDS += "stop remove make the how many what color , .".split()
CONFIG = TinyConfig(
    canvas=32, patch=8, lm_dim=32, lm_layers=1, lm_heads=2, lm_mlp=64, head_width=32, head_layers=2, head_heads=2
)
FAST = SamplingConfig(steps=3, cfg_scale=2.5, max_new_tokens=5)
PROMPTS = ["a red circle", "two blue squares left of a green circle"]


@pytest.fixture(scope="module")
def model() -> TinyUnifiedModel:
    torch.manual_seed(0)
    return TinyUnifiedModel(CONFIG, build_tokenizer(WORDS)).eval()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def _gen() -> torch.Generator:
    return torch.Generator().manual_seed(7)


def test_every_method_returns_batched_shapes(model: TinyUnifiedModel, images: torch.Tensor) -> None:
    texts = (
        model.reason(PROMPTS, FAST, _gen()),
        model.reflect(images, PROMPTS, FAST, _gen()),
        model.answer(images, ["how many circles"] * 2, 4),
    )
    for sample in texts:
        assert len(sample.texts) == 2
        assert sample.token_ids.shape == sample.logprobs.shape == sample.mask.shape
        assert sample.token_ids.shape[0] == 2 and sample.token_ids.shape[1] <= 5
        assert torch.all(sample.logprobs <= 0) and torch.all(sample.logprobs[~sample.mask] == 0)
    reasoning = ["red circle left", "blue square right , green circle above"]
    generated = model.generate(PROMPTS, reasoning, FAST, generator=_gen())
    edited = model.edit(images, ["make the circle red", "remove one square"], FAST, generator=_gen())
    for out in (generated, edited):
        assert out.images.shape == (2, 3, 32, 32) and out.transitions is None
        assert out.images.min() >= 0 and out.images.max() <= 1
    judged = model.judge(images, PROMPTS)
    assert judged.shape == (2,) and torch.all((judged > 0) & (judged < 1))


def test_prompt_likelihood_is_a_probability(model: TinyUnifiedModel, images: torch.Tensor) -> None:
    score = model.prompt_likelihood(images, PROMPTS)
    assert score.shape == (2,) and torch.all((score > 0) & (score <= 1))
    # geometric mean over tokens of probabilities over ~len(WORDS) allowed tokens: near 1 / vocabulary at init
    assert 0.2 / len(WORDS) < score.min() and score.max() < 5 / len(WORDS)


def test_greedy_text_is_deterministic_and_tiny_top_p_is_greedy(model: TinyUnifiedModel, images: torch.Tensor) -> None:
    greedy = SamplingConfig(temperature=0.0, max_new_tokens=5)
    first = model.reflect(images, PROMPTS, greedy, torch.Generator().manual_seed(1))
    second = model.reflect(images, PROMPTS, greedy, torch.Generator().manual_seed(2))
    assert torch.equal(first.token_ids, second.token_ids) and first.temperature == 1.0
    nucleus = model.reflect(images, PROMPTS, SamplingConfig(temperature=1.0, top_p=1e-4, max_new_tokens=5), _gen())
    assert torch.equal(nucleus.token_ids, first.token_ids)
    free = SamplingConfig(max_new_tokens=5)
    sampled = [model.reason(PROMPTS, free, torch.Generator().manual_seed(s)).texts for s in range(3)]
    assert len({tuple(t) for t in sampled}) > 1


def test_stored_text_and_image_log_probs_recompute_to_ratio_one(model: TinyUnifiedModel, images: torch.Tensor) -> None:
    text = model.reason(PROMPTS, SamplingConfig(temperature=0.8, max_new_tokens=5), _gen())
    recomputed = model.text_logprobs(text.query, text.token_ids, text.temperature)
    torch.testing.assert_close(recomputed, text.logprobs, atol=1e-5, rtol=0)
    sde = FAST.model_copy(update={"sde_steps": (0, 2), "cfg_scale": 3.0})
    generated = model.generate(PROMPTS, text.texts, sde, generator=_gen())
    edited = model.edit(images, ["make the circle red", ""], sde, generator=_gen())
    for out in (generated, edited):
        assert out.transitions is not None and out.transitions.steps.logprob.shape == (2, 2)
        again = model.transition_distribution(out.transitions)
        ratio = torch.exp(again.logprob - out.transitions.steps.logprob)
        torch.testing.assert_close(ratio, torch.ones(2, 2), atol=1e-5, rtol=0)


def test_image_does_not_depend_on_the_other_prompts_of_its_batch(model: TinyUnifiedModel) -> None:
    noise = torch.randn(2, 9, 8, 8, generator=_gen())
    batched = model.generate(PROMPTS, None, FAST, noise=noise).images
    alone = model.generate(PROMPTS[:1], None, FAST, noise=noise[:1]).images
    torch.testing.assert_close(alone, batched[:1], atol=1e-5, rtol=0)


def test_masked_joint_attention_matches_diffusers_without_padding(model: TinyUnifiedModel) -> None:
    attn = model.image_head.transformer_blocks[0].attn
    x, context = torch.randn(2, 16, 32), torch.randn(2, 5, 32)
    ours = attn.processor(attn, x, context, torch.ones(2, 1, 1, 21, dtype=torch.bool))
    upstream = JointAttnProcessor2_0()(attn, x, context)
    for a, b in zip(ours, upstream, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_generation_gradients_reach_the_lm(model: TinyUnifiedModel, images: torch.Tensor) -> None:
    model.zero_grad()
    batch = ImageBatch(ImageCondition(PROMPTS, ["red circle left", "blue square right"]), images)
    flow_matching_loss(model, batch, _gen()).backward()
    lm_grads = [p.grad for p in model.lm.model.parameters()]
    assert all(g is not None for g in lm_grads) and sum(g.abs().sum() for g in lm_grads) > 0
    square = Scene(objects=(SceneObject("square", "blue", "large", *cell_center(3, 3, 32)),), canvas=32)
    sources = torch.from_numpy(render(square)).permute(2, 0, 1)[None].float().div(255).expand(2, -1, -1, -1)
    edit = ImageBatch(ImageCondition(["make the circle red"] * 2, sources=sources), sources)
    model.zero_grad()
    flow_matching_loss(model, edit, _gen()).backward()
    embedding_grad = model.lm.get_input_embeddings().weight.grad  # (V, D)
    blue, square_id = model.tokenizer.convert_tokens_to_ids(["blue", "square"])
    assert embedding_grad[blue].abs().sum() > 0 and embedding_grad[square_id].abs().sum() > 0  # the LM reads the source
    model.zero_grad()


def test_a_few_steps_lower_both_losses(images: torch.Tensor) -> None:
    torch.manual_seed(1)
    model = TinyUnifiedModel(CONFIG, build_tokenizer(WORDS))
    texts = TextBatch(TextQuery("answer", ["how many circles"] * 2, images), ["one", "two blue squares"])
    pictures = ImageBatch(ImageCondition(PROMPTS), images)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        step = text_loss(model, texts), flow_matching_loss(model, pictures, torch.Generator().manual_seed(0))
        losses.append([s.item() for s in step])
        optimizer.zero_grad()
        sum(step).backward()
        optimizer.step()
    assert losses[-1][0] < 0.3 * losses[0][0] and losses[-1][1] < 0.7 * losses[0][1]


def test_save_load_round_trip_gives_identical_outputs(
    model: TinyUnifiedModel, images: torch.Tensor, tmp_path: Path
) -> None:
    model.save_pretrained(tmp_path)
    assert {p.name for p in tmp_path.iterdir()} >= {"config.json", "model.safetensors", "tokenizer.json"}
    loaded = TinyUnifiedModel.from_pretrained(tmp_path, expected=CONFIG).eval()
    noise = torch.randn(2, 9, 8, 8, generator=_gen())
    original = model.generate(PROMPTS, None, FAST, noise=noise).images
    assert torch.equal(loaded.generate(PROMPTS, None, FAST, noise=noise).images, original)
    assert torch.equal(loaded.judge(images, PROMPTS), model.judge(images, PROMPTS))
    assert loaded.answer(images, PROMPTS).texts == model.answer(images, PROMPTS).texts


def test_loading_with_another_config_or_foreign_weights_fails_clearly(model: TinyUnifiedModel, tmp_path: Path) -> None:
    model.save_pretrained(tmp_path / "ok")
    with pytest.raises(ValueError, match=r"different TinyConfig \(lm_dim: checkpoint 32 != expected 48, head_layers"):
        other = CONFIG.model_copy(update={"lm_dim": 48, "head_layers": 3})
        TinyUnifiedModel.from_pretrained(tmp_path / "ok", expected=other)
    bigger = TinyUnifiedModel(CONFIG.model_copy(update={"lm_mlp": 96}), model.tokenizer)
    bigger.save_pretrained(tmp_path / "swapped")
    (tmp_path / "swapped" / "config.json").write_text((tmp_path / "ok" / "config.json").read_text())
    with pytest.raises(ValueError, match="do not fit its config"):
        TinyUnifiedModel.from_pretrained(tmp_path / "swapped")


def test_bad_inputs_raise_one_line_errors(model: TinyUnifiedModel, images: torch.Tensor) -> None:
    with pytest.raises(ValueError, match=r"images must have shape \(B, 3, 32, 32\)"):
        model.judge(torch.rand(2, 3, 16, 16), PROMPTS)
    with pytest.raises(ValueError, match="text task 'answer' needs images"):
        TextQuery("answer", ["how many"])
    with pytest.raises(ValueError, match=r"sde_steps \(3,\) must lie in \[0, 3\)"):
        SamplingConfig(steps=3, sde_steps=(3,))
    with pytest.raises(ValueError, match="not divisible by patch"):
        TinyConfig(canvas=48, patch=5)
    with pytest.raises(ValueError, match="canvas 36: must be a multiple of 8"):
        TinyConfig(canvas=36, patch=4)


def test_tiny_model_implements_every_method_of_the_interface() -> None:
    methods = {name: m for name, m in vars(UnifiedModel).items() if callable(m) and not name.startswith("_")}
    assert len(methods) == 9
    for name, method in methods.items():
        ours = inspect.signature(getattr(TinyUnifiedModel, name)).parameters
        assert list(ours) == list(inspect.signature(method).parameters), name


def test_condition_dropout_blanks_only_the_dropped_texts(images: torch.Tensor) -> None:
    condition = ImageCondition(PROMPTS, ["red circle left", "blue square right"])
    dropped = drop_condition(condition, torch.tensor([True, False]))
    assert dropped.prompts == ["", PROMPTS[1]] and dropped.reasoning == ["", "blue square right"]
    edit = drop_condition(ImageCondition(PROMPTS, sources=images), torch.tensor([True, True]))
    assert edit.prompts == ["", ""] and edit.sources is images and edit.reasoning is None


@pytest.mark.parametrize("image_input", ["objects", "pixels"])
def test_every_image_input_reads_images_and_edits(image_input: str, images: torch.Tensor) -> None:
    torch.manual_seed(0)
    model = TinyUnifiedModel(CONFIG.model_copy(update={"image_input": image_input}), build_tokenizer(WORDS)).eval()
    assert len(model.answer(images, ["how many circles"] * 2, 4).texts) == 2
    judged = model.judge(images, PROMPTS)
    assert judged.shape == (2,) and torch.all((judged > 0) & (judged < 1))
    edited = model.edit(images, ["make the circle red", "remove one square"], FAST, generator=_gen())
    assert edited.images.shape == (2, 3, 32, 32)
    # the LM's reading of an image depends on the image and on nothing else of it
    query = TextQuery("answer", ["how many circles"] * 2, torch.cat([images[:1], images[:1]]))
    targets = model.encode_targets(["one", "one"])
    same = model.text_logprobs(query, targets)
    torch.testing.assert_close(same[0], same[1])
    other = model.text_logprobs(TextQuery("answer", ["how many circles"] * 2, images), targets)
    assert not torch.allclose(other[0], other[1])
