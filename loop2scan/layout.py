"""Converting per-layer parameters between the list layout and the stacked layout.

When loop2scan rewrites ``for W, b in params: ...`` with the stacked layout, the
function that builds ``params`` returns one pytree whose leaves carry a
leading layer axis instead of a list of per-layer pytrees.  Checkpoints saved
before the rewrite hold the list layout; these functions convert between the
two exactly (bit for bit, dtypes kept, layer order preserved)::

    from loop2scan.layout import stack_layers, unstack_layers
    stacked = stack_layers(old_params)        # [{"w": (d, d), "b": (d,)}] * L -> {"w": (L, d, d), "b": (L, d)}
    assert all(... unstack_layers(stacked) ...) # and back

``convert_checkpoint`` does the same for files (``.npz``, ``.pkl``/``.pickle``,
and ``.msgpack`` written by ``flax.serialization``) and Orbax checkpoint
directories (``orbax.checkpoint.StandardCheckpointer``: a path with no file
extension); the command line is
``loop2scan convert-state IN OUT --to stacked|list [--key PATH]``.  NNX states
(``nnx.state(model)`` or their pure dicts) convert with :func:`stack_nnx_state`
and :func:`unstack_nnx_state`.

Only NumPy is needed (JAX arrays are converted to NumPy arrays first).
"""

from __future__ import annotations

import os
import pickle
import tempfile
from typing import Any, Sequence


class LayoutError(ValueError):
    """The parameters do not have the shape of the requested conversion."""


# ----------------------------------------------------------------------------- pytrees
def _is_namedtuple(x: Any) -> bool:
    return isinstance(x, tuple) and hasattr(x, "_fields")


def _flatten(tree: Any, path: tuple = ()) -> list[tuple[tuple, Any]]:
    """(path, leaf) pairs in a deterministic order (dict insertion order)."""
    if isinstance(tree, dict):
        out = []
        for k, v in tree.items():
            out += _flatten(v, path + (k,))
        return out
    if isinstance(tree, (list, tuple)):
        out = []
        for i, v in enumerate(tree):
            out += _flatten(v, path + (i,))
        return out
    if tree is None:
        return []
    return [(path, tree)]


def _structure(tree: Any) -> Any:
    """The container skeleton of a pytree (leaves replaced by ``None``)."""
    if isinstance(tree, dict):
        return (type(tree), tuple((k, _structure(v)) for k, v in tree.items()))
    if _is_namedtuple(tree):
        return (type(tree), tuple(_structure(v) for v in tree))
    if isinstance(tree, (list, tuple)):
        return (type(tree), tuple(_structure(v) for v in tree))
    if tree is None:
        return ("none",)
    return "leaf"


def _map(fn, tree: Any) -> Any:
    if isinstance(tree, dict):
        return type(tree)((k, _map(fn, v)) for k, v in tree.items())
    if _is_namedtuple(tree):
        return type(tree)(*[_map(fn, v) for v in tree])
    if isinstance(tree, (list, tuple)):
        return type(tree)(_map(fn, v) for v in tree)
    if tree is None:
        return None
    return fn(tree)


def _np():
    try:
        import numpy as np
    except ImportError as e:  # pragma: no cover - numpy comes with every framework extra
        raise LayoutError("converting parameters needs NumPy (`pip install numpy`)") from e
    return np


def _as_numpy(x: Any):
    np = _np()
    return np.asarray(x)


def stack_layers(layers: Sequence[Any]) -> Any:
    """``[layer_0, ..., layer_{L-1}]`` -> one pytree whose every leaf is the
    ``np.stack`` of that leaf over the layers (layer ``i`` at index ``i``).

    All layers must have the same structure and, leaf by leaf, the same shape
    and dtype; the values are copied bit for bit."""
    np = _np()
    layers = list(layers)
    if not layers:
        raise LayoutError("cannot stack an empty list of layers (the leading axis would have no structure)")
    skeleton = _structure(layers[0])
    flat0 = _flatten(layers[0])
    for i, layer in enumerate(layers[1:], start=1):
        if _structure(layer) != skeleton:
            raise LayoutError(f"layer {i} does not have the structure of layer 0")
        for (path, a), (_, b) in zip(flat0, _flatten(layer)):
            a, b = _as_numpy(a), _as_numpy(b)
            if a.shape != b.shape or a.dtype != b.dtype:
                raise LayoutError(f"layer {i} leaf {'/'.join(map(str, path)) or '<root>'} is {b.dtype}{list(b.shape)}"
                                  f", layer 0 has {a.dtype}{list(a.shape)}")
    leaves = [[_as_numpy(leaf) for _, leaf in _flatten(layer)] for layer in layers]
    stacked = iter([np.stack([layer_leaves[j] for layer_leaves in leaves]) for j in range(len(flat0))])
    return _map(lambda _: next(stacked), layers[0])


def unstack_layers(stacked: Any) -> list:
    """The inverse of :func:`stack_layers`: one pytree per index of the leading axis."""
    flat = _flatten(stacked)
    if not flat:
        raise LayoutError("no arrays to unstack")
    lengths = {_as_numpy(leaf).shape[:1] for _, leaf in flat}
    if len(lengths) != 1 or lengths == {()}:
        raise LayoutError(f"the leaves do not share one leading layer axis (leading sizes: {sorted(lengths)})")
    (n,), = lengths
    out = []
    for i in range(n):
        out.append(_map(lambda leaf, i=i: _as_numpy(leaf)[i].copy(), stacked))
    return out


# ----------------------------------------------------------------------------- Flax NNX
def _pure(state: Any) -> Any:
    """An NNX ``State`` as a pure dict (``nnx.to_pure_dict``); a pure dict as it is."""
    if isinstance(state, dict):
        return state
    from flax import nnx

    return nnx.to_pure_dict(state)


def stack_nnx_state(state: Any, key: str) -> dict:
    """The state of a model whose ``nnx.List`` of layers at ``key`` (a
    "/"-separated path, e.g. ``"decoder/layers"``) became one stacked module:
    every variable of the layers (parameters, RNG keys and counts, batch
    statistics) stacked along a new leading axis, layer ``i`` at index ``i``.

    ``state`` is ``nnx.state(model)`` or its pure dict (``nnx.to_pure_dict``, the
    form Orbax checkpoints hold); the result is a pure dict, which
    ``nnx.replace_by_pure_dict`` puts into the stacked model's state::

        state = nnx.state(new_model)
        nnx.replace_by_pure_dict(state, stack_nnx_state(nnx.state(old_model), "layers"))
        nnx.update(new_model, state)

    Values are copied exactly (typed PRNG keys stay keys)."""
    import jax
    import jax.numpy as jnp

    tree = _pure(state)
    layers = _as_list(_get(tree, key))
    if not layers:
        raise LayoutError(f"no layers under {key!r}: an empty stack has no structure to build")
    skeleton = jax.tree.structure(layers[0])
    for i, layer in enumerate(layers[1:], start=1):
        if jax.tree.structure(layer) != skeleton:
            raise LayoutError(f"layer {i} under {key!r} does not have the structure of layer 0")
        for a, b in zip(jax.tree.leaves(layers[0]), jax.tree.leaves(layer)):
            if jnp.shape(a) != jnp.shape(b) or jnp.asarray(a).dtype != jnp.asarray(b).dtype:
                raise LayoutError(f"layer {i} under {key!r} has a variable of another shape or dtype than layer 0")
    return _set(tree, key, jax.tree.map(lambda *xs: jnp.stack(xs), *layers))


def unstack_nnx_state(state: Any, key: str) -> dict:
    """The inverse of :func:`stack_nnx_state`: the stacked variables at ``key``
    split into layers ``{0: ..., 1: ..., ...}`` (the pure-dict form of an
    ``nnx.List``), layer ``i`` from index ``i``."""
    import jax

    tree = _pure(state)
    stacked = _get(tree, key)
    leaves = jax.tree.leaves(stacked)
    if not leaves:
        raise LayoutError(f"no variables under {key!r}")
    sizes = {leaf.shape[:1] for leaf in leaves}
    if len(sizes) != 1 or sizes == {()}:
        raise LayoutError(f"the variables under {key!r} do not share one leading layer axis")
    (n,), = sizes
    return _set(tree, key, {i: jax.tree.map(lambda leaf, i=i: leaf[i], stacked) for i in range(n)})


# ----------------------------------------------------------------------------- files
def _get(tree: Any, key: str) -> Any:
    node = tree
    for part in [p for p in key.split("/") if p]:
        if isinstance(node, dict):
            part = _dict_key(node, part)
            if part not in node:
                raise LayoutError(f"no entry {part!r} under --key {key!r}")
            node = node[part]
        elif isinstance(node, (list, tuple)):
            node = node[int(part)]
        else:
            raise LayoutError(f"--key {key!r} goes through a leaf")
    return node


def _dict_key(node: dict, part: str) -> Any:
    """``part`` of a "/"-separated path as a key of ``node``: an NNX state keys
    the items of an ``nnx.List`` by ``int``."""
    if part not in node and part.isdigit() and int(part) in node:
        return int(part)
    return part


def _set(tree: Any, key: str, value: Any) -> Any:
    parts = [p for p in key.split("/") if p]
    if not parts:
        return value
    head, rest = parts[0], "/".join(parts[1:])
    if isinstance(tree, dict):
        head = _dict_key(tree, head)
        out = dict(tree)
        out[head] = _set(tree[head], rest, value)
        return out
    if isinstance(tree, (list, tuple)):
        items = list(tree)
        items[int(head)] = _set(items[int(head)], rest, value)
        return type(tree)(items) if not _is_namedtuple(tree) else type(tree)(*items)
    raise LayoutError(f"--key {key!r} goes through a leaf")


def _as_list(node: Any) -> list:
    """A list of layers; a dict keyed "0".."L-1" (how flax serialises lists) or
    0..L-1 (an NNX state's ``nnx.List``) counts too."""
    if isinstance(node, (list, tuple)) and not _is_namedtuple(node):
        return list(node)
    if isinstance(node, dict) and node and all((isinstance(k, str) and k.isdigit()) or
                                               (isinstance(k, int) and not isinstance(k, bool)) for k in node):
        keys = sorted(node, key=int)
        if [int(k) for k in keys] != list(range(len(keys))):
            raise LayoutError("the layer keys are not 0..L-1")
        return [node[k] for k in keys]
    raise LayoutError("the selected entry is not a list of layers (use --key to select it)")


def convert_tree(tree: Any, to: str, key: str = "", indexed_dict: bool = False) -> Any:
    """Convert the entry at ``key`` ("/"-separated) of a checkpoint pytree.
    ``indexed_dict``: write a list as a dict keyed "0".."L-1" (how flax
    serialises lists)."""
    node = _get(tree, key)
    if to == "stacked":
        new = stack_layers(_as_list(node))
    elif to == "list":
        new = unstack_layers(node)
        if indexed_dict:
            new = {str(i): layer for i, layer in enumerate(new)}
    else:
        raise LayoutError(f"--to must be 'stacked' or 'list', not {to!r}")
    return _set(tree, key, new)


def _unflatten_npz(data: dict) -> dict:
    root: dict = {}
    for name, value in data.items():
        node = root
        parts = name.split("/")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return root


def _flatten_npz(tree: Any, prefix: str = "") -> dict:
    out = {}
    if isinstance(tree, dict):
        items = tree.items()
    elif isinstance(tree, (list, tuple)):
        items = ((str(i), v) for i, v in enumerate(tree))
    else:
        return {prefix: _as_numpy(tree)}
    for k, v in items:
        out.update(_flatten_npz(v, f"{prefix}/{k}" if prefix else str(k)))
    return out


def _is_orbax(path: str) -> bool:
    """An Orbax checkpoint: a directory (an existing one, or a new path with no file extension)."""
    return os.path.isdir(path) or not os.path.splitext(path)[1]


def load_checkpoint(path: str) -> Any:
    if _is_orbax(path):
        if not os.path.isdir(path):
            raise LayoutError(f"{path} is not a checkpoint directory")
        try:
            import orbax.checkpoint as ocp
        except ImportError as e:
            raise LayoutError("reading Orbax checkpoints needs orbax-checkpoint (it comes with flax)") from e
        return ocp.StandardCheckpointer().restore(os.path.abspath(path))
    ext = os.path.splitext(path)[1].lower()
    if ext == ".npz":
        np = _np()
        with np.load(path, allow_pickle=False) as data:
            return _unflatten_npz({k: data[k] for k in data.files})
    if ext in (".pkl", ".pickle"):
        with open(path, "rb") as f:
            return pickle.load(f)  # noqa: S301 - the user's own checkpoint
    if ext == ".msgpack":
        try:
            from flax import serialization
        except ImportError as e:
            raise LayoutError("reading .msgpack checkpoints needs flax") from e
        with open(path, "rb") as f:
            return serialization.msgpack_restore(f.read())
    raise LayoutError(f"unsupported checkpoint format {ext or '(none)'!r}: use .npz, .pkl/.pickle or .msgpack")


def _save_orbax(tree: Any, path: str) -> None:
    """An Orbax checkpoint directory, written beside ``path`` and renamed into place."""
    import shutil

    import orbax.checkpoint as ocp

    parent = os.path.dirname(os.path.abspath(path))
    tmp = tempfile.mkdtemp(prefix=".loop2scan-", dir=parent)
    staged = os.path.join(tmp, "checkpoint")
    try:
        checkpointer = ocp.StandardCheckpointer()
        checkpointer.save(staged, tree)
        checkpointer.wait_until_finished()
        if os.path.isdir(path):
            shutil.rmtree(path)
        os.replace(staged, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def save_checkpoint(tree: Any, path: str) -> None:
    """Write atomically (temporary file in the same directory, then rename);
    a path with no extension is an Orbax checkpoint directory."""
    if _is_orbax(path):
        _save_orbax(tree, path)
        return
    ext = os.path.splitext(path)[1].lower()
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".loop2scan-", suffix=ext, dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            if ext == ".npz":
                _np().savez(f, **_flatten_npz(tree))
            elif ext in (".pkl", ".pickle"):
                pickle.dump(tree, f, protocol=pickle.HIGHEST_PROTOCOL)
            elif ext == ".msgpack":
                from flax import serialization

                f.write(serialization.msgpack_serialize(tree))
            else:
                raise LayoutError(f"unsupported checkpoint format {ext or '(none)'!r}")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def convert_checkpoint(src: str, dst: str, to: str, key: str = "") -> Any:
    """Read ``src``, convert the per-layer list at ``key`` to ``to`` ("stacked" or
    "list"), write ``dst`` (same format as its extension).  Returns the new tree."""
    tree = load_checkpoint(src)
    # flax serialisation and Orbax key a list's items "0".."L-1"
    new = convert_tree(tree, to, key, indexed_dict=os.path.splitext(dst)[1].lower() == ".msgpack" or _is_orbax(dst))
    save_checkpoint(new, dst)
    return new
