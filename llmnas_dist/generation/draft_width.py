"""How many prompt-lookup drafts a forward pass feeds (`DraftWidth`), from what passes of
each width have cost on this machine (`PassCosts`); `generation.lookup` decodes with it."""

from __future__ import annotations

COST_EMA = 0.2  # weight of a pass's time in its width's moving average (PassCosts)


class PassCosts:
    """Seconds a forward pass of m tokens has taken on this machine (a moving average per m),
    kept by the generator across answers. A width not timed yet is guessed low, so that it is
    tried once and then known: as costly as the widest timed width below it, or, with none
    below, a timed wider pass's cost scaled down in proportion to its tokens."""

    def __init__(self) -> None:
        self.seconds: dict[int, float] = {}

    def add(self, tokens: int, seconds: float) -> None:
        old = self.seconds.get(tokens)
        self.seconds[tokens] = seconds if old is None else old + COST_EMA * (seconds - old)

    def of(self, tokens: int) -> float:
        if tokens in self.seconds:
            return self.seconds[tokens]
        below = [m for m in self.seconds if m < tokens]
        if below:
            return self.seconds[max(below)]
        above = min((m for m in self.seconds), default=None)
        return 1.0 if above is None else self.seconds[above] * tokens / above


class DraftWidth:
    """How many drafts the next pass feeds (up to the configured `draft_tokens`): the number
    that makes the most tokens per second, given this answer's share of drafts kept so far
    (each draft taken as kept with that probability, while the ones before it were; the
    share counted apart after a pass that kept all its drafts, inside a copy, and after one
    that did not) and what passes of each width have cost on this machine (`PassCosts`).

    A pass of k drafts costs more than a one-token pass, and by how much depends on the CPU:
    SmolLM2-135M at a 900-token context on a 2-core AVX512 Xeon without bf16 (fp32) took 44,
    59, 59, 104 and 149 ms for passes of 1, 2, 3, 4 and 9 tokens. Deltas copy short runs
    (150 tokens in 89 passes of up to 8 drafts), whole programs long ones. Greedy answers of
    the warm-started model on that Xeon, the same tokens in every arm (3 seeds, the default's
    prompts, grammars and token budgets): deltas (431 tokens) took 25.1 s without drafts,
    19.5 s with 2 a pass, 24.6 s with 8; whole programs (2,470 tokens) 136.4, 73.6 and 64.8 s.
    Assisted generation's schedule (2 more after a pass that kept all, one fewer after one
    that did not) took 23.9 and 63.1 s: it follows the copies, not the cost. This width took
    23.3 and 70.2 s up to 8 drafts, 22.7 and 56.1 s up to 16 (the default's draft_tokens);
    with one share for the whole answer 19.9 and 75.3 s up to 8 (whole programs copy in
    runs: a pass after a kept run is likely kept whole).

    The width changes how many passes an answer takes, not its distribution; since it
    follows the clock, a replay may split an answer into other passes, whose logits differ
    only by float rounding (a greedy answer on a loaded CI machine was the same token for
    token)."""

    def __init__(self, most: int, costs: PassCosts) -> None:
        self.most, self.costs = most, costs
        # drafts kept / tried, apart after a pass that kept all its drafts (inside a copy,
        # the next drafts are likely kept too) and after one that did not; uniform priors
        self.kept = {True: 1, False: 1}
        self.tried = {True: 2, False: 2}
        self.copying = False

    def after(self, kept: int, fed: int, seconds: float) -> None:
        self.costs.add(fed + 1, seconds)
        if not fed:
            return
        self.kept[self.copying] += kept
        self.tried[self.copying] += kept + (kept < fed)  # tried once those before are kept
        self.copying = kept == fed

    @property
    def now(self) -> int:
        share = self.kept[self.copying] / self.tried[self.copying]
        # expected tokens of a pass of k drafts: 1 + share + ... + share^k
        rates = [
            (sum(share**i for i in range(k + 1)) / self.costs.of(k + 1), -k)
            for k in range(self.most + 1)
        ]
        return -max(rates)[1]
