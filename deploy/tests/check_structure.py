"""Structural checks of what cannot be run here (Grafana, Docker, CRD-backed k8s objects).

Usage: check_structure.py REPO DEV_YAML PROD_YAML TOPICS_JSON
TOPICS_JSON: {"topic": partitions, ...} as crates/quakelens-transport/src/topics.rs defines them.
Prints one line per problem and exits 1 when there is any.
"""
import json
import sys
from pathlib import Path

import yaml

repo, dev, prod, topics = Path(sys.argv[1]), sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
problems = []


def check(ok, what):
    if not ok:
        problems.append(what)


deploy = repo / "deploy"
grafana = deploy / "grafana"

# Grafana: datasource, dashboard provider, dashboards.
ds = yaml.safe_load((grafana / "provisioning/datasources/prometheus.yml").read_text())
check(ds.get("apiVersion") == 1, "datasources: apiVersion 1")
uids = {d["uid"] for d in ds["datasources"]}
check(uids == {"quakelens-prometheus"}, f"datasource uids {uids}")
prov = yaml.safe_load((grafana / "provisioning/dashboards/quakelens.yml").read_text())
check(prov.get("apiVersion") == 1 and prov["providers"][0]["type"] == "file", "dashboard provider")
dash_uids = set()
for f in sorted((grafana / "dashboards").glob("*.json")):
    d = json.loads(f.read_text())
    for key in ("uid", "title", "panels", "schemaVersion", "templating"):
        check(key in d, f"{f.name}: no {key}")
    check(d["uid"] not in dash_uids, f"{f.name}: duplicate uid {d['uid']}")
    dash_uids.add(d["uid"])
    ids, cells = set(), []
    for p in d["panels"]:
        check(p["id"] not in ids, f"{f.name}: duplicate panel id {p['id']}")
        ids.add(p["id"])
        check(p["type"] in {"timeseries", "heatmap", "stat", "table", "bargauge"}, f"{f.name}: panel type {p['type']}")
        check(p["datasource"]["uid"] in uids, f"{f.name}/{p['title']}: unknown datasource")
        check(len(p["targets"]) > 0, f"{f.name}/{p['title']}: no query")
        refs = [t["refId"] for t in p["targets"]]
        check(len(refs) == len(set(refs)), f"{f.name}/{p['title']}: duplicate refId")
        for t in p["targets"]:
            check(t["expr"].count("(") == t["expr"].count(")"), f"{f.name}/{p['title']}: unbalanced {t['expr']}")
        g = p["gridPos"]
        check(0 <= g["x"] and g["x"] + g["w"] <= 24, f"{f.name}/{p['title']}: wider than the grid")
        cells.append((g["x"], g["y"], g["w"], g["h"], p["title"]))
    for i, a in enumerate(cells):
        for b in cells[i + 1:]:
            overlap = a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]
            check(not overlap, f"{f.name}: panels {a[4]!r} and {b[4]!r} overlap")
check(len(dash_uids) == 2, f"two dashboards expected, found {dash_uids}")

# Grafana-managed alerts mirror the Prometheus alerts: same names, expressions, for, labels.
rules = yaml.safe_load((deploy / "prometheus/rules/quakelens.rules.yml").read_text())
records = {r["record"]: " ".join(r["expr"].split()) for g in rules["groups"] for r in g["rules"] if "record" in r}
alerts = {r["alert"]: r for g in rules["groups"] for r in g["rules"] if "alert" in r}
galerts = yaml.safe_load((grafana / "provisioning/alerting/quakelens-alerts.yml").read_text())
check(galerts.get("apiVersion") == 1, "alerting: apiVersion 1")
mirrored = {}
for group in galerts["groups"]:
    for r in group["rules"]:
        mirrored[r["title"]] = r
check(set(mirrored) == set(alerts), f"Grafana alerts {sorted(mirrored)} != Prometheus alerts {sorted(alerts)}")
for name, a in alerts.items():
    g = mirrored.get(name)
    if not g:
        continue
    expr = " ".join(a["expr"].split())
    for rec, body in records.items():
        expr = expr.replace(rec, f"({body})")
    query = {d["refId"]: d for d in g["data"]}
    check(" ".join(query["A"]["model"]["expr"].split()) == expr, f"{name}: Grafana query differs from the Prometheus rule")
    check(query["A"]["datasourceUid"] in uids, f"{name}: unknown datasource")
    check(g["condition"] in query, f"{name}: condition {g['condition']} is not a query")
    check(g["for"] == a["for"], f"{name}: for {g['for']} != {a['for']}")
    check(g["labels"] == a["labels"], f"{name}: labels differ")
    check(g["annotations"]["summary"].startswith(a["annotations"]["summary"].split("{{")[0]), f"{name}: summary differs")

# docker-compose runs the same services, with the same commands, as k8s/base.
compose = yaml.safe_load((deploy / "docker-compose.yml").read_text())
k8s_docs = [d for d in yaml.safe_load_all(open(dev)) if d]
deployments = {d["metadata"]["name"]: d for d in k8s_docs if d["kind"] == "Deployment"}
k8s_commands = {n.removeprefix("quakelens-"): d["spec"]["template"]["spec"]["containers"][0]["args"][0] for n, d in deployments.items()}
compose_commands = {n: s["command"][0] for n, s in compose["services"].items() if s.get("image", "").startswith("quakelens")}
for name, cmd in k8s_commands.items():
    check(compose_commands.get(name) == cmd, f"compose service {name}: command {compose_commands.get(name)} != k8s {cmd}")
scrape = yaml.safe_load((deploy / "prometheus/prometheus.yml").read_text())
targets = {t.split(":")[0] for c in scrape["scrape_configs"] for s in c["static_configs"] for t in s["targets"]}
for name in k8s_commands:
    if name != "ingest":  # a file replay in compose, a batch job: nothing to scrape
        check(name in targets, f"prometheus.yml does not scrape {name}")

# Kubernetes objects that kubernetes-validate cannot check (CRDs) and our own policies.
for path in (dev, prod):
    docs = [d for d in yaml.safe_load_all(open(path)) if d]
    kinds = {}
    for d in docs:
        kinds.setdefault(d["kind"], []).append(d)
    for d in kinds.get("Deployment", []):
        n = d["metadata"]["name"]
        pod = d["spec"]["template"]["spec"]
        check(pod["securityContext"].get("runAsNonRoot") is True, f"{path}: {n} may run as root")
        for c in pod["containers"]:
            sc = c.get("securityContext", {})
            check(sc.get("readOnlyRootFilesystem") is True, f"{path}: {n} root filesystem writable")
            check(sc.get("allowPrivilegeEscalation") is False, f"{path}: {n} allows privilege escalation")
            check(sc.get("capabilities", {}).get("drop") == ["ALL"], f"{path}: {n} keeps capabilities")
            check("limits" in c.get("resources", {}) and "requests" in c["resources"], f"{path}: {n} without resources")
            check("readinessProbe" in c and "livenessProbe" in c, f"{path}: {n} without probes")
        pdbs = [p for p in kinds.get("PodDisruptionBudget", []) if p["spec"]["selector"]["matchLabels"] == d["spec"]["selector"]["matchLabels"]]
        if d["spec"].get("replicas", 1) > 1 or n in ("quakelens-windower", "quakelens-scorer", "quakelens-forest"):
            check(pdbs, f"{path}: {n} has no PodDisruptionBudget")
    services = {s["metadata"]["name"]: s for s in kinds.get("Service", [])}
    ports = {p["name"] for s in services.values() for p in s["spec"]["ports"]}
    for sm in kinds.get("ServiceMonitor", []):
        for e in sm["spec"]["endpoints"]:
            check(e["port"] in ports, f"{path}: ServiceMonitor port {e['port']} is on no Service")
    for so in kinds.get("ScaledObject", []):
        target = so["spec"]["scaleTargetRef"]["name"]
        check(target in {d["metadata"]["name"] for d in kinds["Deployment"]}, f"{path}: ScaledObject targets missing {target}")
        for t in so["spec"]["triggers"]:
            topic = t["metadata"]["topic"]
            check(topic in topics, f"{path}: ScaledObject on unknown topic {topic}")
            check(so["spec"]["maxReplicaCount"] <= topics.get(topic, 0), f"{path}: {so['metadata']['name']} scales past the partitions of {topic}")
        auth = so["spec"]["triggers"][0].get("authenticationRef")
        if auth:
            check(auth["name"] in {a["metadata"]["name"] for a in kinds.get("TriggerAuthentication", [])}, f"{path}: missing TriggerAuthentication {auth['name']}")
    kt = {t["spec"]["topicName"]: t["spec"]["partitions"] for t in kinds.get("KafkaTopic", [])}
    if kinds.get("Kafka"):
        check(kt == topics, f"{path}: KafkaTopics {kt} != topics.rs {topics}")
        cluster = kinds["Kafka"][0]["metadata"]["name"]
        for t in kinds["KafkaTopic"] + kinds.get("KafkaNodePool", []):
            check(t["metadata"]["labels"].get("strimzi.io/cluster") == cluster, f"{path}: {t['metadata']['name']} not in cluster {cluster}")
    for pvc in kinds.get("PersistentVolumeClaim", []):
        users = [d for d in kinds["Deployment"] for v in d["spec"]["template"]["spec"].get("volumes", []) if v.get("persistentVolumeClaim", {}).get("claimName") == pvc["metadata"]["name"]]
        check(users, f"{path}: PVC {pvc['metadata']['name']} unused")
    for d in kinds.get("Deployment", []):
        for v in d["spec"]["template"]["spec"].get("volumes", []):
            claim = v.get("persistentVolumeClaim", {}).get("claimName")
            if claim:
                check(claim in {p["metadata"]["name"] for p in kinds.get("PersistentVolumeClaim", [])}, f"{path}: {d['metadata']['name']} mounts missing PVC {claim}")

for p in problems:
    print(p)
sys.exit(1 if problems else 0)
