"""SQL views for users of psql, sqlite3 and pandas; one portable definition per view.

Every text a migration ever created stays here, named by that revision: migration 0001
creates VIEWS_0001; 0004 replaces v_failures and v_cycle_stats with today's texts (VIEWS).
To change a view: keep its current text under the revision that made it, then add a
migration that drops it and creates the new one. Documented in db/views.md.
"""

from __future__ import annotations

# Mean successful score per (run, architecture, dataset, budget), ranked within
# (run, dataset, budget) by score desc then hash asc: the same order as `llmnas archive top`.
V_LEADERBOARD = """
CREATE VIEW v_leaderboard AS
WITH per_arch AS (
    SELECT run_id, arch_hash, dataset, budget,
           AVG(score) AS mean_score, COUNT(*) AS n_seeds
    FROM evaluations
    WHERE score IS NOT NULL
    GROUP BY run_id, arch_hash, dataset, budget
)
SELECT p.run_id AS run_id,
       p.arch_hash AS hash,
       p.dataset AS dataset,
       p.budget AS budget,
       p.mean_score AS mean_score,
       p.n_seeds AS n_seeds,
       a.param_count AS params,
       (SELECT MIN(c.cycle) FROM candidates c
         WHERE c.run_id = p.run_id AND c.arch_hash = p.arch_hash) AS first_cycle,
       ROW_NUMBER() OVER (PARTITION BY p.run_id, p.dataset, p.budget
                          ORDER BY p.mean_score DESC, p.arch_hash ASC) AS rank
FROM per_arch p
JOIN architectures a ON a.hash = p.arch_hash
"""

# Per (run, cycle): candidate counts by outcome (every attempt counts), and the best and mean
# successful evaluation score of the architectures admitted in that cycle.
V_CYCLE_STATS_0001 = """
CREATE VIEW v_cycle_stats AS
WITH counts AS (
    SELECT run_id, cycle,
           COUNT(*) AS generated,
           SUM(CASE WHEN status = 'rejected' THEN 1 ELSE 0 END) AS rejected,
           SUM(CASE WHEN status IN ('admitted', 'evaluating', 'evaluated')
                    THEN 1 ELSE 0 END) AS admitted,
           SUM(CASE WHEN status = 'evaluated' THEN 1 ELSE 0 END) AS evaluated,
           SUM(CASE WHEN status = 'failed' THEN 1 ELSE 0 END) AS failed
    FROM candidates
    GROUP BY run_id, cycle
),
scores AS (
    SELECT c.run_id, c.cycle, MAX(e.score) AS best, AVG(e.score) AS mean
    FROM candidates c
    JOIN evaluations e ON e.run_id = c.run_id AND e.arch_hash = c.arch_hash
    WHERE c.status = 'evaluated' AND e.score IS NOT NULL
    GROUP BY c.run_id, c.cycle
)
SELECT k.run_id AS run_id, k.cycle AS cycle, k.generated AS generated,
       k.rejected AS rejected, k.admitted AS admitted, k.evaluated AS evaluated,
       k.failed AS failed, s.best AS best, s.mean AS mean
FROM counts k
LEFT JOIN scores s ON s.run_id = k.run_id AND s.cycle = k.cycle
"""

# Why candidates were rejected or failed, per run (evaluation failures count through their
# candidate, which the evaluator marks failed with the evaluation's error class).
V_FAILURES_0001 = """
CREATE VIEW v_failures AS
SELECT run_id, error_class, COUNT(*) AS count
FROM candidates
WHERE error_class IS NOT NULL
GROUP BY run_id, error_class
"""

# Revision 0004: the same, split by how the answer was sampled (constrained: under a
# grammar; null for candidates recorded before 0004).
V_FAILURES = """
CREATE VIEW v_failures AS
SELECT run_id, error_class, constrained, COUNT(*) AS count
FROM candidates
WHERE error_class IS NOT NULL
GROUP BY run_id, error_class, constrained
"""

# Revision 0004: v_cycle_stats also counts the candidates sampled under a grammar.
V_CYCLE_STATS = V_CYCLE_STATS_0001.replace(
    "           COUNT(*) AS generated,\n",
    "           COUNT(*) AS generated,\n"
    "           SUM(CASE WHEN constrained THEN 1 ELSE 0 END) AS constrained,\n",
).replace("k.generated AS generated,", "k.generated AS generated, k.constrained AS constrained,")

VIEWS_0001: dict[str, str] = {
    "v_leaderboard": V_LEADERBOARD,
    "v_cycle_stats": V_CYCLE_STATS_0001,
    "v_failures": V_FAILURES_0001,
}
VIEWS: dict[str, str] = {
    "v_leaderboard": V_LEADERBOARD,
    "v_cycle_stats": V_CYCLE_STATS,
    "v_failures": V_FAILURES,
}


def include_object(
    obj: object, name: str | None, type_: str, reflected: bool, compare_to: object
) -> bool:
    """Alembic autogenerate filter: views are made from this module, not from the models."""
    return not (type_ == "table" and name in VIEWS)
