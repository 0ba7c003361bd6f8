"""Token and cost budgets: size the next call, and refuse it if it cannot fit.

A budget checked only after a call lets the call that crosses it through,
and on a large model one call can cost more than the rest of the run. So
the next call is sized first: its prompt is counted with the model's
tokenizer, and its ``max_tokens`` is capped at what the output and cost
budgets have left. A call whose prompt alone does not fit is not made.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from airflow_codeagent.agent.trace import Usage


@dataclass(frozen=True)
class CallPlan:
    max_tokens: int | None  # cap for the call's output, None when nothing limits it
    refusal: str | None  # why the call must not be made, naming the budget and by how much


@dataclass(frozen=True)
class Budget:
    max_input_tokens: int | None = None
    max_output_tokens: int | None = None
    max_cost_usd: float | None = None

    def plan(self, usage: Usage, prompt_tokens: int, configured_max_tokens: int | None,
             prices: tuple[float, float] | None) -> CallPlan:
        cap = configured_max_tokens
        if self.max_input_tokens is not None:
            total = usage.input_tokens + prompt_tokens
            if total > self.max_input_tokens:
                return CallPlan(cap, f"max_input_tokens={self.max_input_tokens} would be exceeded by "
                                     f"{total - self.max_input_tokens}: {usage.input_tokens} used, the "
                                     f"next call needs about {prompt_tokens}")
        if self.max_output_tokens is not None:
            left = self.max_output_tokens - usage.output_tokens
            if left <= 0:
                return CallPlan(cap, f"max_output_tokens={self.max_output_tokens} reached: "
                                     f"{usage.output_tokens} used")
            cap = left if cap is None else min(cap, left)
        if self.max_cost_usd is not None and prices is not None and usage.cost_usd is not None:
            input_price, output_price = prices
            left_usd = self.max_cost_usd - usage.cost_usd - prompt_tokens * input_price
            affordable = math.floor(left_usd / output_price) if output_price > 0 else None
            if left_usd <= 0 or (affordable is not None and affordable < 1):
                needed = prompt_tokens * input_price + output_price
                return CallPlan(cap, f"max_cost_usd={self.max_cost_usd:g} would be exceeded: "
                                     f"{usage.cost_usd:.6f} spent, the next call needs at least {needed:.6f}")
            if affordable is not None:
                cap = affordable if cap is None else min(cap, affordable)
        return CallPlan(cap, None)
