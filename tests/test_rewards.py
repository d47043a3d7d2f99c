"""Rewards: the one answer extractor, answer rewards, teacher terms. Hand-computed values."""

import math

import pytest
import torch

from echodistill.train.grpo import group_advantages
from echodistill.train.rewards import (
    accuracy_rewards,
    consistency,
    expand_per_item,
    extract_choice,
    format_rewards,
    grounding,
    snr_weight,
    total_rewards,
)

ANIMALS = ["cat", "dog", "bird", "cow"]
NUMS = ["seven", "seventeen", "nine", "ninety"]
SOUNDS = ["horn", "car horn", "dog barking", "siren"]
HYPHEN = ["twenty-one", "twenty"]

EXTRACT_CASES = [
    # exact answer, case/punctuation/whitespace-insensitive
    ("dog", ANIMALS, 1),
    ("  DOG!! ", ANIMALS, 1),
    ("Dog.", ANIMALS, 1),
    ("Cat", ANIMALS, 0),
    ("seventeen", NUMS, 1),
    ("seven", NUMS, 0),
    ("ninety", NUMS, 3),
    ("car horn", SOUNDS, 1),
    ("dog barking", SOUNDS, 2),
    ("twenty one", HYPHEN, 0),
    ("twenty", HYPHEN, 1),
    # letters map to the displayed order
    ("B", ANIMALS, 1),
    ("(B)", ANIMALS, 1),
    ("B.", ANIMALS, 1),
    ("b", ANIMALS, 1),
    ("Answer: B", ANIMALS, 1),
    ("The answer is (C).", ANIMALS, 2),
    ("The answer is B.", ANIMALS, 1),
    ("option D", ANIMALS, 3),
    ("(B) dog", ANIMALS, 1),
    ("B. dog", ANIMALS, 1),
    ("(A) dog", ANIMALS, None),  # letter and text contradict
    ("E", ANIMALS, None),  # no fifth choice
    ("B", ["x", "y"], 1),
    # cue phrases
    ("The answer is dog.", ANIMALS, 1),
    ("answer: bird", ANIMALS, 2),
    ("I think it's a cow", ANIMALS, 3),
    ("It is the cat.", ANIMALS, 0),
    ("It\u2019s a dog", ANIMALS, 1),  # curly apostrophe
    ("bird is the answer", ANIMALS, 2),
    ("I would say cow.", ANIMALS, 3),
    ("The animals are cat, dog, bird. The answer is bird.", ANIMALS, 2),
    ("The answer is seventeen.", NUMS, 1),
    ("It sounds like a car horn.", SOUNDS, 1),
    ("I hear a siren", SOUNDS, 3),
    ("It's a siren!", SOUNDS, 3),
    ("It's twenty-one.", HYPHEN, 0),
    # whole-phrase match with word boundaries, longest choice wins
    ("I counted nine beeps", NUMS, 2),
    ("I counted ninety beeps", NUMS, 3),
    ("a horn", SOUNDS, 0),
    ("category", ANIMALS, None),  # "cat" is not a word of it
    ("hotdogs", ANIMALS, None),
    # negation ignored
    ("It's not a cat, it's a dog.", ANIMALS, 1),
    ("It isn't a cat, it's a dog", ANIMALS, 1),
    ("A dog, not a cat.", ANIMALS, 1),
    ("Not a cat but a dog", ANIMALS, 1),
    ("a dog rather than a cat", ANIMALS, 1),
    ("Seventeen, not seven.", NUMS, 1),
    ("not a siren, a car horn", SOUNDS, 1),
    ("neither cat nor dog, it is a bird", ANIMALS, 2),
    ("not cat", ANIMALS, None),
    ("Definitely not the dog.", ANIMALS, None),
    ("The answer is not cat.", ANIMALS, None),
    ("neither cat nor dog", ANIMALS, None),
    # two different choices asserted = no answer
    ("cat or dog", ANIMALS, None),
    ("It could be a cat or a dog.", ANIMALS, None),
    ("The answer is cat. No wait, the answer is dog.", ANIMALS, None),
    # empty / garbage
    ("", ANIMALS, None),
    ("   ", ANIMALS, None),
    ("???", ANIMALS, None),
    ("asdf qwerty", ANIMALS, None),
]


@pytest.mark.parametrize("text,choices,expected", EXTRACT_CASES)
def test_extract_choice(text, choices, expected):
    assert extract_choice(text, choices) == expected


def test_extract_table_is_large():
    assert len(EXTRACT_CASES) >= 40


def test_extract_non_string_and_no_choices():
    assert extract_choice(None, ANIMALS) is None
    assert extract_choice("dog", []) is None


# --- answer rewards ---------------------------------------------------------------------------

def test_accuracy_rewards_item_major():
    texts = ["dog", "cat", "The answer is B.", "",  # item 0: target dog
             "seventeen", "not seventeen", "seven", "ninety"]  # item 1: target seven
    choices = [ANIMALS, NUMS]
    r = accuracy_rewards(texts, choices, ["dog", "seven"], num_generations=4)
    assert r.tolist() == [1, 0, 1, 0, 0, 0, 1, 0]
    r = accuracy_rewards(texts, choices, [1, 0], num_generations=4, wrong=-1.0)
    assert r.tolist() == [1, -1, 1, -1, -1, -1, 1, -1]
    assert r.shape == (8,) and r.dtype == torch.float32


def test_accuracy_rewards_checks_sizes_and_targets():
    with pytest.raises(ValueError):
        accuracy_rewards(["dog"] * 3, [ANIMALS], ["dog"], num_generations=2)
    with pytest.raises(ValueError):
        accuracy_rewards(["dog"] * 2, [ANIMALS], ["horse"], num_generations=2)


def test_format_rewards():
    texts = ["dog", "Dog.", " dog\n", "It's a dog", "dog, I think", "B", "", "cow!"]
    r = format_rewards(texts, [ANIMALS, ANIMALS], num_generations=4)
    assert r.tolist() == [1, 1, 1, 0, 0, 0, 0, 1]
    with pytest.raises(ValueError):
        format_rewards(texts, [ANIMALS, ANIMALS], num_generations=4, fmt="json")


# --- teacher terms ----------------------------------------------------------------------------

def test_consistency_modes_hand_values():
    lT = torch.log(torch.tensor([[0.5, 0.25, 0.9], [1.0, 0.1, 0.1]]))
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    c = consistency(lT, mask, "mean_prob")
    # row 0: (0.5 + 0.25) / 2 = 0.375 (padding ignored); row 1: (1 + 0.1 + 0.1) / 3 = 0.4
    assert torch.allclose(c, torch.tensor([0.375, 0.4]))

    match = torch.tensor([[True, False, True], [True, True, False]])
    c = consistency(lT, mask, "argmax_agree", teacher_argmax_match=match)
    # row 0: [1, 0] -> 0.5 ; row 1: [1, 1, 0] -> 2/3
    assert torch.allclose(c, torch.tensor([0.5, 2 / 3]))

    lT2 = torch.tensor([[-1.0, -10.0, 0.0], [0.0, -2.5, -5.0]])
    c = consistency(lT2, torch.ones(2, 3), "mean_logprob", logprob_clip=5.0)
    # clip to [-5, 0], /5 + 1: row 0 [0.8, 0, 1] -> 0.6; row 1 [1, 0.5, 0] -> 0.5
    assert torch.allclose(c, torch.tensor([0.6, 0.5]))


def test_consistency_errors_and_empty_rows():
    lT = torch.zeros(2, 3)
    with pytest.raises(ValueError):
        consistency(lT, torch.ones(2, 3), "argmax_agree")
    with pytest.raises(ValueError):
        consistency(lT, torch.ones(2, 3), "sequence_bonus")
    c = consistency(lT, torch.tensor([[0, 0, 0], [1, 0, 0]]), "mean_prob")
    assert c.tolist() == [0.0, 1.0]


def test_consistency_differs_per_candidate_and_a_constant_bonus_cancels():
    """All four candidates correct: accuracy gives GRPO no signal. Token-level consistency does;
    the release's per-item constant bonus (flaw 3) does not -- z-scoring removes it."""
    G = 4
    r_acc = torch.ones(G)
    lT = torch.log(torch.tensor([[0.9, 0.9], [0.5, 0.9], [0.2, 0.4], [0.9, 0.1]]))
    c = consistency(lT, torch.ones(G, 2), "mean_prob")
    assert len(set(c.tolist())) == G  # differs per candidate
    r = total_rewards(r_acc, torch.ones(G), c, None, 0.5, {"accuracy": 1.0, "format": 0.1})
    adv = group_advantages(r.view(1, G), "group")
    assert adv.abs().max() > 0.5
    assert torch.argmax(adv).item() == 0  # the candidate the clean teacher agrees with most

    flawed = r_acc + 0.1 * r_acc + 0.5 * 0.77  # one teacher scalar per item, added to every candidate
    assert torch.equal(group_advantages(flawed.view(1, G), "group"), torch.zeros(1, G))
    # With mixed accuracy, the constant shifts every reward equally: advantages are unchanged.
    mixed = torch.tensor([[1.0, 0.0, 1.0, 0.0]])
    assert torch.allclose(group_advantages(mixed + 0.385, "group"), group_advantages(mixed, "group"))


def test_snr_weight():
    kw = dict(w0=0.5, snr_lo=-10.0, snr_hi=30.0, w_min=0.2)
    w = snr_weight(torch.tensor([-20.0, -10.0, 0.0, 10.0, 26.0, 30.0, 40.0]), **kw)
    # frac = (30 - snr) / 40 clipped to [0.2, 1]: 1.75->1, 1, 0.75, 0.5, 0.1->0.2, 0->0.2, -0.25->0.2
    assert torch.allclose(w, torch.tensor([0.5, 0.5, 0.375, 0.25, 0.1, 0.1, 0.1]))
    assert snr_weight(0.0, **kw).shape == ()
    assert snr_weight(0.0, **kw).item() == pytest.approx(0.375)
    assert snr_weight([5.0, -5.0], **kw).shape == (2,)
    flat = snr_weight(torch.tensor([-10.0, 30.0]), shaping=False, **kw)
    assert flat.tolist() == [0.5, 0.5]
    with pytest.raises(ValueError):
        snr_weight(0.0, w0=0.5, snr_lo=10.0, snr_hi=10.0, w_min=0.2)


def test_grounding_hand_values():
    lT = torch.tensor([[-1.0, -1.0, -6.0], [-2.0, -2.0, 0.0]])
    l0 = torch.tensor([[-2.0, -4.0, -1.0], [-2.0, -9.0, -9.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    g = grounding(lT, l0, mask, k=2.0)
    # row 0: diffs [1, 3, -5] -> clip [1, 2, -2] / 2 = [0.5, 1, -1] -> 1/6
    # row 1: diffs [0, 7, (9 masked)] -> [0, 1] -> 0.5
    assert torch.allclose(g, torch.tensor([1 / 6, 0.5]))
    with pytest.raises(ValueError):
        grounding(lT, l0, mask, k=0.0)


def test_total_rewards_and_expand():
    r_acc = torch.tensor([1.0, 0.0])
    r_fmt = torch.tensor([1.0, 1.0])
    c = torch.tensor([0.6, 0.2])
    g = torch.tensor([0.2, -1.0])
    w = expand_per_item(torch.tensor([0.25]), 2)
    assert w.tolist() == [0.25, 0.25]
    r = total_rewards(r_acc, r_fmt, c, g, w, {"accuracy": 1.0, "format": 0.1}, lambda_g=0.5)
    # 1 + 0.1 + 0.25 * (0.6 + 0.5*0.2) = 1.275 ; 0 + 0.1 + 0.25 * (0.2 - 0.5) = 0.025
    assert torch.allclose(r, torch.tensor([1.275, 0.025]))
    plain = total_rewards(r_acc, r_fmt, None, None, w, {"accuracy": 1.0, "format": 0.1})
    assert torch.allclose(plain, torch.tensor([1.1, 0.1]))
    assert expand_per_item([1.0, 2.0], 3).tolist() == [1, 1, 1, 2, 2, 2]
    assert math.isclose(total_rewards(r_acc, r_fmt, c, None, 1.0, {})[0].item(), 0.6, rel_tol=1e-6)
