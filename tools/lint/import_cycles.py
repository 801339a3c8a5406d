"""An import-linter contract for the import cycles ``acyclic_siblings`` cannot see: through a package's ``__init__``.

``acyclic_siblings`` (the "no cycles" contract in pyproject.toml) looks for cycles between the children of each
package, at every depth, so any cycle between two modules of lmtune shows there -- except one through a
package's own ``__init__``: in ``pkg/__init__ -> pkg.a -> pkg/__init__`` the package is no sibling of ``pkg.a``.
This contract fails on each import of a package by a module inside it while the package imports that module
back, directly or through others.

pyproject.toml registers it (``contract_types``); lint-imports runs in the repository root, which it puts
on ``sys.path``, so ``tools.lint.import_cycles`` imports from there.
"""

from __future__ import annotations

from typing import Any

from importlinter import Contract, ContractCheck, output


class InitCyclesContract(Contract):
    type_name = "init_cycles"

    def check(self, graph: Any, verbose: bool) -> ContractCheck:
        cycles = []
        for module in sorted(graph.modules):
            for package in sorted(graph.find_modules_directly_imported_by(module)):
                if not module.startswith(package + "."):
                    continue  # not one of its own packages
                back = graph.find_shortest_chain(importer=package, imported=module)
                if back:
                    lines = [d["line_number"] for d in graph.get_import_details(importer=module, imported=package)]
                    cycles.append((" -> ".join([*back, package]), lines))
        return ContractCheck(kept=not cycles, metadata={"cycles": cycles})

    def render_broken_contract(self, check: ContractCheck) -> None:
        for chain, lines in check.metadata["cycles"]:
            output.print_error(f"{chain} (the last import: l.{', l.'.join(map(str, lines))})", bold=False)
            output.new_line()
