"""A JSON schema for the Kubernetes objects deploy/kubernetes uses: the fields of the v1 API that matter
here, with their types, required fields and no unknown fields (so a misspelt or misplaced field fails
validation, as it would on ``kubectl apply --validate=strict``). A subset of Kubernetes' OpenAPI
definitions, written down because no validator that bundles them installs here."""

from __future__ import annotations

from typing import Any

STRING = {"type": "string"}
STRING_MAP = {"type": "object", "additionalProperties": STRING}
PORT = {"type": "integer", "minimum": 1, "maximum": 65535}
INT_OR_STRING = {"anyOf": [PORT, {"type": "string", "pattern": "^[a-z0-9-]{1,15}$"}]}
QUANTITY = {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?(m|Ki|Mi|Gi|Ti|k|M|G|T)?$"}
SELECTOR = {
    "type": "object",
    "properties": {"matchLabels": STRING_MAP},
    "required": ["matchLabels"],
    "additionalProperties": False,
}


def strict(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": list(required),
        "additionalProperties": False,
    }


METADATA = strict({"name": STRING, "namespace": STRING, "labels": STRING_MAP, "annotations": STRING_MAP})
PROBE = strict(
    {
        "httpGet": strict(
            {"path": STRING, "port": INT_OR_STRING, "scheme": {"enum": ["HTTP", "HTTPS"]}}, ("port",)
        ),
        "tcpSocket": strict({"port": INT_OR_STRING}, ("port",)),
        "exec": strict({"command": {"type": "array", "items": STRING}}),
        "initialDelaySeconds": {"type": "integer"},
        "periodSeconds": {"type": "integer"},
        "timeoutSeconds": {"type": "integer"},
        "failureThreshold": {"type": "integer"},
        "successThreshold": {"type": "integer"},
    }
)
ENV_VAR = strict(
    {
        "name": {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$"},
        "value": STRING,
        "valueFrom": strict(
            {"fieldRef": strict({"fieldPath": STRING, "apiVersion": STRING}, ("fieldPath",))}
        ),
    },
    ("name",),
)
CONTAINER = strict(
    {
        "name": STRING,
        "image": STRING,
        "imagePullPolicy": {"enum": ["Always", "IfNotPresent", "Never"]},
        "command": {"type": "array", "items": STRING},
        "args": {"type": "array", "items": STRING},
        "env": {"type": "array", "items": ENV_VAR},
        "ports": {
            "type": "array",
            "items": strict(
                {
                    "name": {"type": "string", "pattern": "^[a-z0-9-]{1,15}$"},
                    "containerPort": PORT,
                    "protocol": {"enum": ["TCP", "UDP", "SCTP"]},
                },
                ("containerPort",),
            ),
        },
        "readinessProbe": PROBE,
        "livenessProbe": PROBE,
        "startupProbe": PROBE,
        "resources": strict(
            {
                "requests": {"type": "object", "additionalProperties": QUANTITY},
                "limits": {"type": "object", "additionalProperties": QUANTITY},
            }
        ),
        "volumeMounts": {
            "type": "array",
            "items": strict({"name": STRING, "mountPath": STRING}, ("name", "mountPath")),
        },
    },
    ("name", "image"),
)
POD_TEMPLATE = strict(
    {
        "metadata": METADATA,
        "spec": strict(
            {
                "containers": {"type": "array", "items": CONTAINER, "minItems": 1},
                "terminationGracePeriodSeconds": {"type": "integer"},
                "volumes": {"type": "array"},
            },
            ("containers",),
        ),
    },
    ("spec",),
)
SERVICE_PORT = strict(
    {
        "name": STRING,
        "port": PORT,
        "targetPort": INT_OR_STRING,
        "protocol": {"enum": ["TCP", "UDP", "SCTP"]},
    },
    ("port",),
)
PVC_TEMPLATE = strict(
    {
        "metadata": METADATA,
        "spec": strict(
            {
                "accessModes": {
                    "type": "array",
                    "items": {"enum": ["ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany"]},
                },
                "storageClassName": STRING,
                "resources": strict({"requests": strict({"storage": QUANTITY}, ("storage",))}, ("requests",)),
            },
            ("accessModes", "resources"),
        ),
    }
)


def _object(api_version: str, kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    return strict(
        {"apiVersion": {"const": api_version}, "kind": {"const": kind}, "metadata": METADATA, "spec": spec},
        ("apiVersion", "kind", "metadata", "spec"),
    )


SCHEMAS: dict[str, dict[str, Any]] = {
    "Service": _object(
        "v1",
        "Service",
        strict(
            {
                "type": {"enum": ["ClusterIP", "NodePort", "LoadBalancer"]},
                "clusterIP": STRING,
                "publishNotReadyAddresses": {"type": "boolean"},
                "selector": STRING_MAP,
                "ports": {"type": "array", "items": SERVICE_PORT, "minItems": 1},
            },
            ("ports",),
        ),
    ),
    "StatefulSet": _object(
        "apps/v1",
        "StatefulSet",
        strict(
            {
                "serviceName": STRING,
                "replicas": {"type": "integer", "minimum": 0},
                "podManagementPolicy": {"enum": ["OrderedReady", "Parallel"]},
                "selector": SELECTOR,
                "template": POD_TEMPLATE,
                "volumeClaimTemplates": {"type": "array", "items": PVC_TEMPLATE},
            },
            ("serviceName", "selector", "template"),
        ),
    ),
    "Deployment": _object(
        "apps/v1",
        "Deployment",
        strict(
            {
                "replicas": {"type": "integer", "minimum": 0},
                "selector": SELECTOR,
                "template": POD_TEMPLATE,
            },
            ("selector", "template"),
        ),
    ),
    "PodDisruptionBudget": _object(
        "policy/v1",
        "PodDisruptionBudget",
        strict(
            {
                "maxUnavailable": INT_OR_STRING,
                "minAvailable": INT_OR_STRING,
                "selector": SELECTOR,
            },
            ("selector",),
        ),
    ),
}
