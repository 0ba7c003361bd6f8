"""Prompt size per step over a long run, with and without compaction.

A scripted 40-step run whose every observation is large (the model-side
answers come from ``ScriptedLLMServer``; the agent, litellm and the HTTP
calls are real). Prompt tokens are counted from what the server actually
received, with litellm's tokenizer for the model. Without compaction the
prompt grows with every step until it no longer fits any context window;
with it, it stays flat.

    python -m bench.context_growth [--steps 40] [--budget 4000]
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import litellm  # noqa: E402

from airflow_codeagent import CodeAgent, RetryPolicy  # noqa: E402
from airflow_codeagent.testing.scripted_llm import ScriptedLLMServer  # noqa: E402

MODEL = "openai/scripted-model"


def _script(steps: int) -> list[str]:
    step = "Thought: next batch.\n```python\nbatch_{i} = [{{'row': r, 'value': r * {i}}} for r in range(60)]\nprint(batch_{i})\n```"
    return [step.format(i=i) for i in range(1, steps + 1)] + [
        f"Thought: done.\n```python\nfinal_answer(sum(r['value'] for r in batch_{steps}))\n```"]


def measure(steps: int, compaction: str, budget: int) -> list[int]:
    with ScriptedLLMServer(_script(steps)) as server:
        agent = CodeAgent(MODEL, model_kwargs={"api_base": server.api_base, "api_key": "x"},
                          max_steps=steps + 1, compaction=compaction, max_prompt_tokens=budget,
                          retry=RetryPolicy(max_retries=0))
        run = agent.run("Load every batch and report the sum of the last one.")
        if run.status.value != "final_answer":
            raise SystemExit(f"compaction={compaction}: the run ended with {run.status.value}: {run.error}")
        return [litellm.token_counter(model=MODEL, messages=r.messages) for r in server.requests]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--budget", type=int, default=4000, help="max_prompt_tokens for the compacted run")
    args = parser.parse_args()
    plain = measure(args.steps, "off", args.budget)
    digest = measure(args.steps, "digest", args.budget)
    print(f"prompt tokens per model call, {args.steps}-step run; each step adds ~{plain[1] - plain[0]} "
          f"tokens uncompacted; budget {args.budget}")
    print(f"{'call':>5} {'no compaction':>14} {'compaction (digest)':>20} {'ratio':>7}")
    for index, (a, b) in enumerate(zip(plain, digest), start=1):
        if index in (1, 2, 5) or index % 5 == 0 or index == len(plain):
            print(f"{index:>5} {a:>14,} {b:>20,} {b / a:>7.2f}")
    print(f"{'total':>5} {sum(plain):>14,} {sum(digest):>20,} {sum(digest) / sum(plain):>7.2f}")
    print(f"{'max':>5} {max(plain):>14,} {max(digest):>20,} {max(digest) / max(plain):>7.2f}")


if __name__ == "__main__":
    main()
