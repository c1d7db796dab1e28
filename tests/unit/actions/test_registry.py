"""The registry: namespaces come from modules, every caller runs an action through ActionSpec.invoke."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
from service_fixtures import make_ctx

from irp.actions.registry import ActionArgs, ActionContext, action, get_registry
from irp.errors import InvalidArgumentsError

PACKAGE = Path(importlib.import_module("irp.actions").__file__).parent


class TestDiscovery:
    def test_every_action_lives_in_the_module_its_namespace_names(self) -> None:
        for name, spec in get_registry().items():
            namespace = name.split(".")[0]
            assert spec.module.split(".")[:3] == ["irp", "actions", namespace], (name, spec.module)

    def test_a_module_added_to_the_package_is_found_without_a_list(self) -> None:
        modules = {spec.module for spec in get_registry().values()}
        on_disk = {".".join(("irp", *path.relative_to(PACKAGE.parent.parent / "irp").with_suffix("").parts))
                   for path in PACKAGE.rglob("*.py") if path.name != "__init__.py"}
        assert modules <= on_disk and len(modules) >= 14

    def test_an_action_outside_the_package_must_name_its_namespace(self) -> None:
        with pytest.raises(TypeError, match=r'outside irp.actions: name its namespace, e.g. @action\(namespace="bench"\)'):
            @action
            def stray(args: ActionArgs, ctx: ActionContext) -> None:
                """Nothing."""


class TestInvoke:
    def test_every_problem_of_the_arguments_is_listed_and_nothing_runs(self, tmp_path: Path) -> None:
        spec = get_registry()["response.assign_action"]
        ctx = make_ctx(tmp_path)
        with pytest.raises(InvalidArgumentsError) as caught:
            spec.invoke({"title": "", "due_in_hours": -1}, ctx)
        text = str(caught.value)
        assert text.startswith("invalid args for response.assign_action: ")
        assert "title:" in text and "owner: Field required" in text and "due_in_hours:" in text
        assert ctx.timeline == [] and ctx.updates == {}

    def test_valid_arguments_run_the_action_and_come_back_parsed(self, tmp_path: Path) -> None:
        spec = get_registry()["timeline.record"]
        ctx = make_ctx(tmp_path)
        parsed, output = spec.invoke({"message": "checked the logs"}, ctx)
        assert parsed.kind == "note" and output == {"recorded": "checked the logs"}
        assert [e.message for e in ctx.timeline] == ["checked the logs"]
