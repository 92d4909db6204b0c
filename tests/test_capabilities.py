"""The one capability vocabulary: what passes require or use and what targets declare meet exactly."""

from __future__ import annotations

from infer_compile.core.capabilities import BUILD_PROVIDED, Capability
from infer_compile.core.ir import Model
from infer_compile.passes import Pass, PassContext, PassManager, PassResult, all_passes
from infer_compile.targets import TARGETS
from tests.builders import tiny_cnn


def _wanted() -> set[Capability]:
    return {cap for cls in all_passes().values() for cap in cls.requires | cls.uses}


def test_every_capability_a_pass_wants_is_provided() -> None:
    declared = {cap for target in TARGETS for cap in target.capabilities}
    assert _wanted() - declared - BUILD_PROVIDED == set()


def test_every_capability_a_target_declares_is_wanted_by_a_pass() -> None:
    for target in TARGETS:
        assert target.capabilities - _wanted() == set(), target.name


def test_the_vocabulary_has_no_unused_member() -> None:
    declared = {cap for target in TARGETS for cap in target.capabilities}
    assert set(Capability) == declared | BUILD_PROVIDED


class Probe(Pass):
    name = "probe"
    description = "records the capabilities it sees"
    uses = frozenset({Capability.GELU})
    seen: frozenset[Capability] = frozenset()

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        Probe.seen = ctx.capabilities
        return PassResult()


def test_a_pass_sees_only_the_capabilities_it_declares() -> None:
    ctx = PassContext(capabilities=frozenset({Capability.GELU, Capability.FUSED_CONV}))
    PassManager([Probe()]).run(Model.from_proto(tiny_cnn()), ctx)
    assert Probe.seen == {Capability.GELU}
