"""Spot checks of the real-code audit: the rewrites that the packages' own
tests do not reach (no tests in the wheel, or none calling the function),
executed beside the original on inputs written here.

    python benchmarks/audit_spot_checks.py [--venv build/audit-venv]

The installed packages of the checked modules are copied and rewritten whole
with ``loop2scan rewrite --write --include-tests --min-trip-count 0`` (the
options of the widened audit, so that every rewrite the audit lists is
exercised; each checked module must hold a rewrite), and
a script run in the audit environment (``real_audit.py`` creates it) executes
the rewritten module's code in the namespace of the imported original and
compares outputs, eagerly and under ``jax.jit`` where noted.  Exit 0 when
every check is equal.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

from common import REPO_ROOT, log

sys.path.insert(0, REPO_ROOT)

from loop2scan.api import Options, run  # noqa: E402

MODULES = (
    "equinox/nn/_spectral_norm.py",
    "gymnax/environments/minatar/asterix.py",
    "gymnax/environments/minatar/freeway.py",
    "ott/tools/gaussian_mixture/gaussian_mixture.py",
    "dm_pix/_src/interpolation.py",
    "jax_md/mm_forcefields/nonbonded/electrostatics.py",
    "jax/experimental/sparse/linalg.py",
    "augmax/geometric.py",
)

CHECKS = r'''
import importlib, json, sys
import numpy as np
import jax, jax.numpy as jnp

NEW = json.loads(sys.argv[1])  # module name -> rewritten file
results = []


def load_new(modname):
    m = importlib.import_module(modname)
    ns = dict(m.__dict__)
    exec(compile(open(NEW[modname]).read(), m.__file__, "exec"), ns)
    return m, ns


def close(a, b, what, rtol=2e-5, atol=2e-6):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    ok = len(la) == len(lb)
    for x, y in zip(la, lb):
        x, y = np.asarray(x), np.asarray(y)
        ok = ok and x.shape == y.shape and x.dtype == y.dtype and np.allclose(x, y, rtol=rtol, atol=atol)
    results.append({"check": what, "equal": bool(ok)})


rng = np.random.default_rng(0)

import equinox as eqx
m, ns = load_new("equinox.nn._spectral_norm")
for dt in (jnp.float32, jnp.bfloat16):
    for shape in ((5, 7), (3, 2)):
        lin = eqx.nn.Linear(shape[1], shape[0], key=jax.random.PRNGKey(1), dtype=dt)
        a = m.SpectralNorm(lin, "weight", key=jax.random.PRNGKey(2))
        b = ns["SpectralNorm"](lin, "weight", key=jax.random.PRNGKey(2))
        close(eqx.nn.State(a).get(a.uv_index), eqx.nn.State(b).get(b.uv_index),
              f"equinox SpectralNorm.__init__ {shape} {dt.__name__}")

for modname, env_name in (("gymnax.environments.minatar.asterix", "MinAsterix"),
                          ("gymnax.environments.minatar.freeway", "MinFreeway")):
    m, ns = load_new(modname)
    ea, eb = getattr(m, env_name)(), ns[env_name]()
    params = ea.default_params
    key = jax.random.PRNGKey(0)
    _, state = ea.reset(key, params)
    same = True
    for i in range(30):
        key, k1, k2 = jax.random.split(key, 3)
        same = same and bool(np.array_equal(ea.get_obs(state, params), eb.get_obs(state, params)))
        state = ea.step(k1, state, ea.action_space(params).sample(k2), params)[1]
    results.append({"check": f"gymnax {env_name}.get_obs over 30 environment steps", "equal": same})

m, ns = load_new("ott.tools.gaussian_mixture.gaussian_mixture")
for n in (4, 1):
    a = m.GaussianMixture.from_random(jax.random.PRNGKey(3), n_components=n, n_dimensions=3)
    b = ns["GaussianMixture"].from_random(jax.random.PRNGKey(3), n_components=n, n_dimensions=3)
    close((a.loc, a.scale_params), (b.loc, b.scale_params), f"ott GaussianMixture.from_random n={n}")
    c = m.GaussianMixture.from_mean_cov_component_weights(a.loc, a.covariance, a.component_weights)
    d = ns["GaussianMixture"].from_mean_cov_component_weights(a.loc, a.covariance, a.component_weights)
    close((c.loc, c.scale_params), (d.loc, d.scale_params), f"ott GaussianMixture.from_mean_cov_component_weights n={n}")

m, ns = load_new("dm_pix._src.interpolation")
for shape, coords_shape in (((4, 5, 3), (3, 6, 2)), ((6, 7), (2, 9)), ((5,), (1, 4))):
    vol = jnp.asarray(rng.normal(size=shape), jnp.float32)
    coords = jnp.asarray(rng.uniform(-1, max(shape), size=coords_shape), jnp.float32)
    close(m.flat_nd_linear_interpolate(vol, coords), ns["flat_nd_linear_interpolate"](vol, coords),
          f"dm_pix flat_nd_linear_interpolate {shape}")

m, ns = load_new("jax_md.mm_forcefields.nonbonded.electrostatics")
for gs, n in ((8, 5), (5, 1), (11, 3)):
    charges = jnp.asarray(rng.normal(size=(n,)), jnp.float32)
    box = jnp.asarray([9.0, 7.5, 8.2], jnp.float32)
    pos = jnp.asarray(rng.uniform(0, 7.0, size=(n, 3)), jnp.float32)
    close(m.PMECoulomb(grid_size=gs).structure_factor(charges, pos, box),
          ns["PMECoulomb"](grid_size=gs).structure_factor(charges, pos, box),
          f"jax_md PMECoulomb.structure_factor grid {gs}, {n} charges")

# the orthonormal bases of these functions are defined up to the signs and order an eigensolver
# picks (the original differs between eager and jit in the same way): the spans are compared
m, ns = load_new("jax.experimental.sparse.linalg")
span = lambda q: q @ q.T
for n, k, j in ((12, 3, 2), (9, 4, 4), (7, 1, 3), (20, 5, 6)):
    basis = jnp.asarray(np.linalg.qr(rng.normal(size=(n, k)))[0], jnp.float32)
    u = jnp.asarray(rng.normal(size=(n, j)), jnp.float32)
    close(span(m._orthonormalize(u)), span(ns["_orthonormalize"](u)), f"jax sparse _orthonormalize span {n}x{j}",
          1e-4, 1e-5)
    close(span(jax.jit(m._orthonormalize)(u)), span(jax.jit(ns["_orthonormalize"])(u)),
          f"jax sparse _orthonormalize span, jit {n}x{j}", 1e-4, 1e-5)
    close(span(m._project_out(basis, u)), span(ns["_project_out"](basis, u)), f"jax sparse _project_out span {n}",
          1e-4, 1e-5)

m, ns = load_new("augmax.geometric")
for shape, n in (((9, 7), 5), ((6, 6), 1)):
    offsets = jnp.asarray(rng.normal(size=(2, *shape)) * 0.3, jnp.float32)
    transform = jnp.asarray([[1.0, 0.1, 0.4], [-0.05, 0.95, -0.3], [0.0, 0.0, 1.0]], jnp.float32)
    points = jnp.asarray(rng.uniform(0, min(shape), size=(n, 2)), jnp.float32)
    outs = []
    for cls in (m.LazyCoordinates, ns["LazyCoordinates"]):
        c = cls(shape)
        c.push_transform(transform)
        c.apply_pixelwise_offsets(offsets)
        outs.append(c.apply_to_points(points))
    close(outs[0], outs[1], f"augmax LazyCoordinates.apply_to_points {shape}, {n} points", 1e-5, 1e-5)

print(json.dumps(results))
'''


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--venv", default=os.path.join(REPO_ROOT, "build", "audit-venv"),
                    help="the audit environment (benchmarks/real_audit.py creates it)")
    args = ap.parse_args()
    python = os.path.join(args.venv, "bin", "python")
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="l2s-spot-") as tmp:
        # each package is rewritten whole, as the audit does: helpers in other modules are visible
        packages = sorted({rel.split("/")[0] for rel in MODULES})
        for pkg in packages:
            shutil.copytree(os.path.join(site, pkg), os.path.join(tmp, pkg),
                            ignore=shutil.ignore_patterns("__pycache__"))
        report = run([os.path.join(tmp, pkg) for pkg in packages],
                     Options(write=True, include_tests=True, min_trip_count=0))
        rewritten = {os.path.relpath(f.path, tmp): sum(1 for loop in f.loops if loop.status == "rewritten")
                     for f in report.files}
        missing = [rel for rel in MODULES if not rewritten.get(rel)]
        if missing:
            print(f"no rewrite in {', '.join(missing)}: nothing to check there", file=sys.stderr)
            return 1
        rewrites = sum(rewritten[rel] for rel in MODULES)
        new = {rel[:-3].replace("/", "."): os.path.join(tmp, rel) for rel in MODULES}
        log(f"[spot] {rewrites} rewrites in {len(MODULES)} modules")
        proc = subprocess.run([python, "-c", CHECKS, json.dumps(new)], capture_output=True, text=True,
                              env={**os.environ, "JAX_PLATFORMS": "cpu"})
    if proc.returncode != 0:
        print(proc.stderr[-3000:], file=sys.stderr)
        return 1
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    for r in results:
        print(("equal     " if r["equal"] else "DIFFERENT ") + r["check"])
    bad = [r for r in results if not r["equal"]]
    print(f"{len(results) - len(bad)} of {len(results)} checks equal ({rewrites} rewrites in the checked modules)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
