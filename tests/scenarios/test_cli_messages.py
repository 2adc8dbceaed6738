# Errors that teach: YAML errors located to the column with no placeholders,
# object problems in the contract's format, unknown pod, Service and node names
# answered with what the cluster has ("did you mean").
import pytest

from .kdp_cli import clean_error, kdp


@pytest.mark.parametrize("text, where, what", [
    ("apiVersion: v1\nkind: Pod\nmetadata: {name: a\nspec: {}\n", ":4:5: ", "invalid YAML: while parsing a flow mapping, expected ','"),
    ("apiVersion: v1\nkind: Pod\n  metadata: x\n", ":3:11: ", "invalid YAML: mapping values are not allowed here"),
    ("apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nmetadata: {name: b}\n", ":4:1: ", "duplicate key 'metadata'"),
])
def test_yaml_errors_name_file_line_and_column_without_placeholders(tmp_path, text, where, what):
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    r = kdp("validate", f)
    err = clean_error(r)
    assert r.returncode == 2
    assert any(line.startswith(f"{f}{where}{what}") for line in err.splitlines()), err
    assert " - " not in err and "-: " not in err


def test_object_problems_keep_the_contract_format(tmp_path):
    f = tmp_path / "pod.yaml"
    f.write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: Bad_Name}\nspec: {containers: [{name: c}]}\n"
                 "---\napiVersion: v1\nkind: Pod\nmetadata: {namespace: x}\nspec: {containers: [{name: c}]}\n")
    err = clean_error(kdp("validate", f)).splitlines()
    assert err[0].startswith(f"{f}:3: Pod default/Bad_Name: metadata.name: ")
    assert err[1] == f"{f}:8: Pod (no name): metadata.name: required field is missing"


@pytest.mark.parametrize("target, hint", [
    ("pod/default/clinet", "did you mean pod/default/client?"),
    ("pod/default/nginx", "did you mean pod/default/nginx-"),
    ("svc/backend/servic-a", "no such Service in the cluster; did you mean svc/backend/service-a?"),
    ("svc/default/service-a", "did you mean svc/backend/service-a?"),
    ("node/aks-nodepool1-71771131-vmss00000", "no such node; did you mean node/aks-nodepool1-71771131-vmss000000"),
    ("pod/nope/x", "there is no namespace 'nope'"),
])
def test_unknown_names_get_did_you_mean_from_the_cluster(target, hint):
    r = kdp("trace", "demo", "--from", "pod/default/client", "--to", target)
    err = clean_error(r)
    assert r.returncode == 2 and err.startswith(f"kdp: error: {target}: no such ") and hint in err, err


def test_unknown_node_for_rules_gets_did_you_mean():
    r = kdp("rules", "demo", "--node", "aks-nodepool1-71771131-vmss00001")
    assert r.returncode == 2 and "did you mean aks-nodepool1-71771131-vmss000010" not in r.stderr
    assert "no such node; did you mean aks-nodepool1-71771131-vmss000001" in clean_error(r)
