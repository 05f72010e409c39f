"""Decode Kubernetes' protobuf request bodies (``application/vnd.kubernetes.protobuf``) to JSON-shaped dicts.

kubectl's typed commands (``create namespace|configmap|secret|deployment|job|...``, ``run``, ``expose``,
``drain``'s evictions, ``create token``) send their bodies as protobuf, listing JSON only as a fallback in
``Accept``.  So the server must *decode* protobuf; it never has to encode it.

Wire format: the 4-byte magic ``k8s\\x00`` followed by a ``runtime.Unknown`` message::

    Unknown  { 1: typeMeta TypeMeta, 2: raw bytes, 3: contentEncoding string, 4: contentType string }
    TypeMeta { 1: apiVersion string, 2: kind string }   (runtime.TypeMeta: NOT the meta/v1 numbering)

``raw`` is the object in the proto2 encoding described by the ``generated.proto`` files of k8s.io/api and
k8s.io/apimachinery.  The schema below transcribes the field numbers and types of those files (one entry per
message).  It is keyed by the *JSON* names, which usually equal the proto names but not always (e.g.
``BoundObjectReference.aPIVersion`` is JSON ``apiVersion``; embedded Go structs such as
``Probe.handler`` or ``Volume.volumeSource`` are JSON-inlined: marked ``^`` below).

Mapping to JSON (what Go's encoding/json would print for the same object):

* ``meta.v1.Time`` -> RFC 3339 seconds ``"2006-01-02T15:04:05Z"``; ``MicroTime`` -> ``"...05.000000Z"``;
  Go's zero time (an empty message, which is how a non-pointer unset Time is written, e.g. kubectl's
  ``creationTimestamp``) -> the key is left out, as kubectl's own JSON does.
* ``Duration`` -> Go duration string (``"1h0m0s"``); ``resource.Quantity`` -> its string;
  ``intstr.IntOrString`` -> int or str; ``RawExtension`` / ``FieldsV1`` -> the parsed JSON they carry.
* ``bytes`` (and ``map<string, bytes>`` values, e.g. ``Secret.data``) -> base64 strings, like Go's ``[]byte``.
* int32/int64 -> int, bool -> bool; repeated scalars are accepted packed and unpacked.

Presence rule ("omitempty"): gogo-protobuf writes every non-pointer Go field, even when empty, while Go's
JSON drops most of them with ``omitempty``; the .proto does not say which.  So: a decoded ``""`` (string,
bytes, quantity) or a list or map without elements is left out.  A numeric zero or ``false`` is KEPT,
because pointer fields carry meaning (``replicas: 0``, ``automountServiceAccountToken: false``), except
for the fields the schema marks ``oint``/``obool`` (non-pointer, omitempty: ``hostPort``, probe
thresholds, ``stdin``, status counters...), whose zero is dropped exactly as Go's JSON drops it, so
server-side defaulting sees them unset.  Map values and list items are never dropped.  Empty embedded
messages are kept (``{}``), as Go's JSON prints a non-pointer struct.

Robustness: unknown field numbers are skipped (newer clients may send fields this table lacks); a field
whose wire type contradicts the schema, a truncated varint or length, or a length past the end raises
:class:`ProtobufError` naming the field path.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import orjson

PROTOBUF: Final = "application/vnd.kubernetes.protobuf"
MAGIC: Final = b"k8s\x00"

Obj = dict[str, Any]


class ProtobufError(ValueError):
    """The body is not a well-formed Kubernetes protobuf message (or is of a kind this module lacks)."""


class _Malformed(Exception):
    """Low-level wire error; turned into a ProtobufError carrying the field path by the message decoder."""


# --------------------------------------------------------------------------------------------------------------
# Schema.  "N:name:type" per field, N the proto field number, name the JSON name.  type defaults to str:
#   str bytes bool int (int32/int64) time mtime (MicroTime) dur qty (Quantity) ios (IntOrString)
#   raw (RawExtension) fieldsv1, or a message name;  "[]T" repeated;  "{T}" map<string, T>;
#   "N:^Msg" embeds Msg's fields into the parent (Go struct embedded with `json:",inline"`);
#   oint/obool: a non-pointer Go field tagged omitempty, whose zero proto2 still writes but means "unset"
#   (e.g. Probe.timeoutSeconds: server defaulting must see it absent).  Plain int/bool are Go pointers
#   (replicas, runAsUser: an explicit 0/false matters) or fields without omitempty (exitCode): kept.
# Messages of other API groups that collide with core names carry a "group." prefix.
# --------------------------------------------------------------------------------------------------------------

_CONTAINER = (
    "1:name 2:image 3:command:[]str 4:args:[]str 5:workingDir 6:ports:[]ContainerPort"
    " 19:envFrom:[]EnvFromSource 7:env:[]EnvVar 8:resources:ResourceRequirements"
    " 23:resizePolicy:[]ContainerResizePolicy 24:restartPolicy 25:restartPolicyRules:[]ContainerRestartRule"
    " 9:volumeMounts:[]VolumeMount 21:volumeDevices:[]VolumeDevice 10:livenessProbe:Probe"
    " 11:readinessProbe:Probe 22:startupProbe:Probe 12:lifecycle:Lifecycle 13:terminationMessagePath"
    " 20:terminationMessagePolicy 14:imagePullPolicy 15:securityContext:SecurityContext"
    " 16:stdin:obool 17:stdinOnce:obool 18:tty:obool"
)
_OBJ = "1:metadata:ObjectMeta"  # every top-level object starts with it
_CONDITION = "1:type 2:status 3:lastTransitionTime:time 4:reason 5:message"
_CONDITION_PROBED = "1:type 2:status 3:lastProbeTime:time 4:lastTransitionTime:time 5:reason 6:message"
_LOCAL_REF_KEY = "1:^LocalObjectReference 2:key 3:optional:bool"  # ConfigMapKeySelector, SecretKeySelector
_LOCAL_REF_PROJ = "1:^LocalObjectReference 2:items:[]KeyToPath 4:optional:bool"  # *Projection
_ROLLING = "1:maxUnavailable:ios 2:maxSurge:ios"

SCHEMA: Final[dict[str, str]] = {
    # ---- k8s.io/apimachinery meta/v1 -------------------------------------------------------------------------
    "ObjectMeta": (
        "1:name 2:generateName 3:namespace 4:selfLink 5:uid 6:resourceVersion 7:generation:oint"
        " 8:creationTimestamp:time 9:deletionTimestamp:time 10:deletionGracePeriodSeconds:int"
        " 11:labels:{str} 12:annotations:{str} 13:ownerReferences:[]OwnerReference 14:finalizers:[]str"
        " 17:managedFields:[]ManagedFieldsEntry"
    ),
    "OwnerReference": "5:apiVersion 1:kind 3:name 4:uid 6:controller:bool 7:blockOwnerDeletion:bool",
    "ManagedFieldsEntry": (
        "1:manager 2:operation 3:apiVersion 4:time:time 6:fieldsType 7:fieldsV1:fieldsv1 8:subresource"
    ),
    "LabelSelector": "1:matchLabels:{str} 2:matchExpressions:[]LabelSelectorRequirement",
    "LabelSelectorRequirement": "1:key 2:operator 3:values:[]str",
    "Condition": "1:type 2:status 3:observedGeneration:oint 4:lastTransitionTime:time 5:reason 6:message",
    "DeleteOptions": (
        "1:gracePeriodSeconds:int 2:preconditions:Preconditions 3:orphanDependents:bool 4:propagationPolicy"
        " 5:dryRun:[]str 6:ignoreStoreReadErrorWithClusterBreakingPotential:bool"
    ),
    "Preconditions": "1:uid 2:resourceVersion",
    # ---- core/v1: top-level kinds ----------------------------------------------------------------------------
    "Namespace": f"{_OBJ} 2:spec:NamespaceSpec 3:status:NamespaceStatus",
    "Node": f"{_OBJ} 2:spec:NodeSpec 3:status:NodeStatus",
    "Pod": f"{_OBJ} 2:spec:PodSpec 3:status:PodStatus",
    "ConfigMap": f"{_OBJ} 4:immutable:bool 2:data:{{str}} 3:binaryData:{{bytes}}",
    "Secret": f"{_OBJ} 5:immutable:bool 2:data:{{bytes}} 4:stringData:{{str}} 3:type",
    "Service": f"{_OBJ} 2:spec:ServiceSpec 3:status:ServiceStatus",
    "Endpoints": f"{_OBJ} 2:subsets:[]EndpointSubset",
    "Event": (
        f"{_OBJ} 2:involvedObject:ObjectReference 3:reason 4:message 5:source:EventSource"
        " 6:firstTimestamp:time 7:lastTimestamp:time 8:count:oint 9:type 10:eventTime:mtime"
        " 11:series:EventSeries 12:action 13:related:ObjectReference 14:reportingComponent 15:reportingInstance"
    ),
    "ServiceAccount": (
        f"{_OBJ} 2:secrets:[]ObjectReference 3:imagePullSecrets:[]LocalObjectReference"
        " 4:automountServiceAccountToken:bool"
    ),
    "PersistentVolumeClaim": f"{_OBJ} 2:spec:PersistentVolumeClaimSpec 3:status:PersistentVolumeClaimStatus",
    "Binding": f"{_OBJ} 2:target:ObjectReference",
    "PodTemplate": f"{_OBJ} 2:template:PodTemplateSpec",
    "ReplicationController": (
        f"{_OBJ} 2:spec:ReplicationControllerSpec 3:status:ReplicationControllerStatus"
    ),
    "LimitRange": f"{_OBJ} 2:spec:LimitRangeSpec",
    "ResourceQuota": f"{_OBJ} 2:spec:ResourceQuotaSpec 3:status:ResourceQuotaStatus",
    # ---- core/v1: namespace, node ----------------------------------------------------------------------------
    "NamespaceSpec": "1:finalizers:[]str",
    "NamespaceStatus": "1:phase 2:conditions:[]NamespaceCondition",
    "NamespaceCondition": "1:type 2:status 4:lastTransitionTime:time 5:reason 6:message",
    "NodeSpec": (
        "1:podCIDR 7:podCIDRs:[]str 3:providerID 4:unschedulable:obool 5:taints:[]Taint"
        " 6:configSource:NodeConfigSource 2:externalID"
    ),
    "Taint": "1:key 2:value 3:effect 4:timeAdded:time",
    "NodeConfigSource": "2:configMap:ConfigMapNodeConfigSource",
    "ConfigMapNodeConfigSource": "1:namespace 2:name 3:uid 4:resourceVersion 5:kubeletConfigKey",
    "NodeStatus": (
        "1:capacity:{qty} 2:allocatable:{qty} 3:phase 4:conditions:[]NodeCondition 5:addresses:[]NodeAddress"
        " 6:daemonEndpoints:NodeDaemonEndpoints 7:nodeInfo:NodeSystemInfo 8:images:[]ContainerImage"
        " 9:volumesInUse:[]str 10:volumesAttached:[]AttachedVolume 11:config:NodeConfigStatus"
        " 12:runtimeHandlers:[]NodeRuntimeHandler 13:features:NodeFeatures 14:declaredFeatures:[]str"
    ),
    "NodeCondition": (
        "1:type 2:status 3:lastHeartbeatTime:time 4:lastTransitionTime:time 5:reason 6:message"
    ),
    "NodeAddress": "1:type 2:address",
    "NodeDaemonEndpoints": "1:kubeletEndpoint:DaemonEndpoint",
    "DaemonEndpoint": "1:Port:int",  # sic: the JSON name is capitalised
    "NodeSystemInfo": (
        "1:machineID 2:systemUUID 3:bootID 4:kernelVersion 5:osImage 6:containerRuntimeVersion"
        " 7:kubeletVersion 8:kubeProxyVersion 9:operatingSystem 10:architecture 11:swap:NodeSwapStatus"
    ),
    "NodeSwapStatus": "1:capacity:int",
    "ContainerImage": "1:names:[]str 2:sizeBytes:oint",
    "AttachedVolume": "1:name 2:devicePath",
    "NodeConfigStatus": (
        "1:assigned:NodeConfigSource 2:active:NodeConfigSource 3:lastKnownGood:NodeConfigSource 4:error"
    ),
    "NodeRuntimeHandler": "1:name 2:features:NodeRuntimeHandlerFeatures",
    "NodeRuntimeHandlerFeatures": "1:recursiveReadOnlyMounts:bool 2:userNamespaces:bool",
    "NodeFeatures": "1:supplementalGroupsPolicy:bool 2:containerUlimits:bool",
    # ---- core/v1: pod spec -----------------------------------------------------------------------------------
    "PodTemplateSpec": f"{_OBJ} 2:spec:PodSpec",
    "PodSpec": (
        "1:volumes:[]Volume 20:initContainers:[]Container 2:containers:[]Container"
        " 34:ephemeralContainers:[]EphemeralContainer 3:restartPolicy 4:terminationGracePeriodSeconds:int"
        " 5:activeDeadlineSeconds:int 6:dnsPolicy 7:nodeSelector:{str} 8:serviceAccountName"
        " 9:serviceAccount 21:automountServiceAccountToken:bool 10:nodeName 11:hostNetwork:obool"
        " 12:hostPID:obool 13:hostIPC:obool 27:shareProcessNamespace:bool 14:securityContext:PodSecurityContext"
        " 15:imagePullSecrets:[]LocalObjectReference 16:hostname 17:subdomain 18:affinity:Affinity"
        " 19:schedulerName 22:tolerations:[]Toleration 23:hostAliases:[]HostAlias 24:priorityClassName"
        " 25:priority:int 26:dnsConfig:PodDNSConfig 28:readinessGates:[]PodReadinessGate 29:runtimeClassName"
        " 30:enableServiceLinks:bool 31:preemptionPolicy 32:overhead:{qty}"
        " 33:topologySpreadConstraints:[]TopologySpreadConstraint 35:setHostnameAsFQDN:bool 36:os:PodOS"
        " 37:hostUsers:bool 38:schedulingGates:[]PodSchedulingGate 39:resourceClaims:[]PodResourceClaim"
        " 40:resources:ResourceRequirements 41:hostnameOverride 42:workloadRef:WorkloadReference"
    ),
    "Container": _CONTAINER,
    "EphemeralContainer": "1:^EphemeralContainerCommon 2:targetContainerName",
    "EphemeralContainerCommon": _CONTAINER,  # a field-for-field copy of Container
    "ContainerPort": "1:name 2:hostPort:oint 3:containerPort:int 4:protocol 5:hostIP",
    "ContainerResizePolicy": "1:resourceName 2:restartPolicy",
    "ContainerRestartRule": "1:action 2:exitCodes:ContainerRestartRuleOnExitCodes",
    "ContainerRestartRuleOnExitCodes": "1:operator 2:values:[]int",
    "EnvFromSource": "1:prefix 2:configMapRef:ConfigMapEnvSource 3:secretRef:SecretEnvSource",
    "ConfigMapEnvSource": "1:^LocalObjectReference 2:optional:bool",
    "SecretEnvSource": "1:^LocalObjectReference 2:optional:bool",
    "EnvVar": "1:name 2:value 3:valueFrom:EnvVarSource",
    "EnvVarSource": (
        "1:fieldRef:ObjectFieldSelector 2:resourceFieldRef:ResourceFieldSelector"
        " 3:configMapKeyRef:ConfigMapKeySelector 4:secretKeyRef:SecretKeySelector 5:fileKeyRef:FileKeySelector"
    ),
    "ObjectFieldSelector": "1:apiVersion 2:fieldPath",
    "ResourceFieldSelector": "1:containerName 2:resource 3:divisor:qty",
    "ConfigMapKeySelector": _LOCAL_REF_KEY,
    "SecretKeySelector": _LOCAL_REF_KEY,
    "FileKeySelector": "1:volumeName 2:path 3:key 4:optional:bool",
    "LocalObjectReference": "1:name",
    "ResourceRequirements": "1:limits:{qty} 2:requests:{qty} 3:claims:[]ResourceClaim",
    "ResourceClaim": "1:name 2:request",
    "VolumeMount": (
        "1:name 2:readOnly:obool 7:recursiveReadOnly 3:mountPath 4:subPath 5:mountPropagation 6:subPathExpr"
    ),
    "VolumeDevice": "1:name 2:devicePath",
    "Probe": (
        "1:^ProbeHandler 2:initialDelaySeconds:oint 3:timeoutSeconds:oint 4:periodSeconds:oint"
        " 5:successThreshold:oint 6:failureThreshold:oint 7:terminationGracePeriodSeconds:int"
    ),
    "ProbeHandler": "1:exec:ExecAction 2:httpGet:HTTPGetAction 3:tcpSocket:TCPSocketAction 4:grpc:GRPCAction",
    "ExecAction": "1:command:[]str",
    "HTTPGetAction": "1:path 2:port:ios 3:host 4:scheme 5:httpHeaders:[]HTTPHeader",
    "HTTPHeader": "1:name 2:value",
    "TCPSocketAction": "1:port:ios 2:host",
    "GRPCAction": "1:port:int 2:service",
    "Lifecycle": "1:postStart:LifecycleHandler 2:preStop:LifecycleHandler 3:stopSignal",
    "LifecycleHandler": (
        "1:exec:ExecAction 2:httpGet:HTTPGetAction 3:tcpSocket:TCPSocketAction 4:sleep:SleepAction"
    ),
    "SleepAction": "1:seconds:int",
    "SecurityContext": (
        "1:capabilities:Capabilities 2:privileged:bool 3:seLinuxOptions:SELinuxOptions"
        " 10:windowsOptions:WindowsSecurityContextOptions 4:runAsUser:int 8:runAsGroup:int 5:runAsNonRoot:bool"
        " 6:readOnlyRootFilesystem:bool 7:allowPrivilegeEscalation:bool 9:procMount"
        " 11:seccompProfile:SeccompProfile 12:appArmorProfile:AppArmorProfile 13:ulimits:[]Ulimit"
    ),
    "Capabilities": "1:add:[]str 2:drop:[]str",
    "SELinuxOptions": "1:user 2:role 3:type 4:level",
    "WindowsSecurityContextOptions": (
        "1:gmsaCredentialSpecName 2:gmsaCredentialSpec 3:runAsUserName 4:hostProcess:bool"
    ),
    "SeccompProfile": "1:type 2:localhostProfile",
    "AppArmorProfile": "1:type 2:localhostProfile",
    "Ulimit": "1:name 2:hard:int 3:soft:int",
    "PodSecurityContext": (
        "1:seLinuxOptions:SELinuxOptions 8:windowsOptions:WindowsSecurityContextOptions 2:runAsUser:int"
        " 6:runAsGroup:int 3:runAsNonRoot:bool 4:supplementalGroups:[]int 12:supplementalGroupsPolicy"
        " 5:fsGroup:int 7:sysctls:[]Sysctl 9:fsGroupChangePolicy 10:seccompProfile:SeccompProfile"
        " 11:appArmorProfile:AppArmorProfile 13:seLinuxChangePolicy"
    ),
    "Sysctl": "1:name 2:value",
    "Affinity": "1:nodeAffinity:NodeAffinity 2:podAffinity:PodAffinity 3:podAntiAffinity:PodAntiAffinity",
    "NodeAffinity": (
        "1:requiredDuringSchedulingIgnoredDuringExecution:NodeSelector"
        " 2:preferredDuringSchedulingIgnoredDuringExecution:[]PreferredSchedulingTerm"
    ),
    "NodeSelector": "1:nodeSelectorTerms:[]NodeSelectorTerm",
    "NodeSelectorTerm": "1:matchExpressions:[]NodeSelectorRequirement 2:matchFields:[]NodeSelectorRequirement",
    "NodeSelectorRequirement": "1:key 2:operator 3:values:[]str",
    "PreferredSchedulingTerm": "1:weight:int 2:preference:NodeSelectorTerm",
    "PodAffinity": (
        "1:requiredDuringSchedulingIgnoredDuringExecution:[]PodAffinityTerm"
        " 2:preferredDuringSchedulingIgnoredDuringExecution:[]WeightedPodAffinityTerm"
    ),
    "PodAntiAffinity": (
        "1:requiredDuringSchedulingIgnoredDuringExecution:[]PodAffinityTerm"
        " 2:preferredDuringSchedulingIgnoredDuringExecution:[]WeightedPodAffinityTerm"
    ),
    "PodAffinityTerm": (
        "1:labelSelector:LabelSelector 2:namespaces:[]str 3:topologyKey 4:namespaceSelector:LabelSelector"
        " 5:matchLabelKeys:[]str 6:mismatchLabelKeys:[]str"
    ),
    "WeightedPodAffinityTerm": "1:weight:int 2:podAffinityTerm:PodAffinityTerm",
    "Toleration": "1:key 2:operator 3:value 4:effect 5:tolerationSeconds:int",
    "HostAlias": "1:ip 2:hostnames:[]str",
    "PodDNSConfig": "1:nameservers:[]str 2:searches:[]str 3:options:[]PodDNSConfigOption",
    "PodDNSConfigOption": "1:name 2:value",
    "PodReadinessGate": "1:conditionType",
    "TopologySpreadConstraint": (
        "1:maxSkew:int 2:topologyKey 3:whenUnsatisfiable 4:labelSelector:LabelSelector 5:minDomains:int"
        " 6:nodeAffinityPolicy 7:nodeTaintsPolicy 8:matchLabelKeys:[]str"
    ),
    "PodOS": "1:name",
    "PodSchedulingGate": "1:name",
    "PodResourceClaim": "1:name 3:resourceClaimName 4:resourceClaimTemplateName",
    "WorkloadReference": "1:name 2:podGroup 3:podGroupReplicaKey",
    # ---- core/v1: volumes ------------------------------------------------------------------------------------
    "Volume": "1:name 2:^VolumeSource",
    "VolumeSource": (
        "1:hostPath:HostPathVolumeSource 2:emptyDir:EmptyDirVolumeSource"
        " 3:gcePersistentDisk:GCEPersistentDiskVolumeSource"
        " 4:awsElasticBlockStore:AWSElasticBlockStoreVolumeSource 5:gitRepo:GitRepoVolumeSource"
        " 6:secret:SecretVolumeSource 7:nfs:NFSVolumeSource 8:iscsi:ISCSIVolumeSource"
        " 9:glusterfs:GlusterfsVolumeSource 10:persistentVolumeClaim:PersistentVolumeClaimVolumeSource"
        " 11:rbd:RBDVolumeSource 12:flexVolume:FlexVolumeSource 13:cinder:CinderVolumeSource"
        " 14:cephfs:CephFSVolumeSource 15:flocker:FlockerVolumeSource 16:downwardAPI:DownwardAPIVolumeSource"
        " 17:fc:FCVolumeSource 18:azureFile:AzureFileVolumeSource 19:configMap:ConfigMapVolumeSource"
        " 20:vsphereVolume:VsphereVirtualDiskVolumeSource 21:quobyte:QuobyteVolumeSource"
        " 22:azureDisk:AzureDiskVolumeSource 23:photonPersistentDisk:PhotonPersistentDiskVolumeSource"
        " 26:projected:ProjectedVolumeSource 24:portworxVolume:PortworxVolumeSource"
        " 25:scaleIO:ScaleIOVolumeSource 27:storageos:StorageOSVolumeSource 28:csi:CSIVolumeSource"
        " 29:ephemeral:EphemeralVolumeSource 30:image:ImageVolumeSource"
    ),
    "HostPathVolumeSource": "1:path 2:type",
    "EmptyDirVolumeSource": "1:medium 2:sizeLimit:qty",
    "GCEPersistentDiskVolumeSource": "1:pdName 2:fsType 3:partition:oint 4:readOnly:obool",
    "AWSElasticBlockStoreVolumeSource": "1:volumeID 2:fsType 3:partition:oint 4:readOnly:obool",
    "GitRepoVolumeSource": "1:repository 2:revision 3:directory",
    "SecretVolumeSource": "1:secretName 2:items:[]KeyToPath 3:defaultMode:int 4:optional:bool",
    "KeyToPath": "1:key 2:path 3:mode:int",
    "NFSVolumeSource": "1:server 2:path 3:readOnly:obool",
    "ISCSIVolumeSource": (
        "1:targetPortal 2:iqn 3:lun:int 4:iscsiInterface 5:fsType 6:readOnly:obool 7:portals:[]str"
        " 8:chapAuthDiscovery:obool 11:chapAuthSession:obool 10:secretRef:LocalObjectReference 12:initiatorName"
    ),
    "GlusterfsVolumeSource": "1:endpoints 2:path 3:readOnly:obool",
    "PersistentVolumeClaimVolumeSource": "1:claimName 2:readOnly:obool",
    "RBDVolumeSource": (
        "1:monitors:[]str 2:image 3:fsType 4:pool 5:user 6:keyring 7:secretRef:LocalObjectReference"
        " 8:readOnly:obool"
    ),
    "FlexVolumeSource": (
        "1:driver 2:fsType 3:secretRef:LocalObjectReference 4:readOnly:obool 5:options:{str}"
    ),
    "CinderVolumeSource": "1:volumeID 2:fsType 3:readOnly:obool 4:secretRef:LocalObjectReference",
    "CephFSVolumeSource": (
        "1:monitors:[]str 2:path 3:user 4:secretFile 5:secretRef:LocalObjectReference 6:readOnly:obool"
    ),
    "FlockerVolumeSource": "1:datasetName 2:datasetUUID",
    "DownwardAPIVolumeSource": "1:items:[]DownwardAPIVolumeFile 2:defaultMode:int",
    "DownwardAPIVolumeFile": (
        "1:path 2:fieldRef:ObjectFieldSelector 3:resourceFieldRef:ResourceFieldSelector 4:mode:int"
    ),
    "FCVolumeSource": "1:targetWWNs:[]str 2:lun:int 3:fsType 4:readOnly:obool 5:wwids:[]str",
    "AzureFileVolumeSource": "1:secretName 2:shareName 3:readOnly:obool",
    "ConfigMapVolumeSource": (
        "1:^LocalObjectReference 2:items:[]KeyToPath 3:defaultMode:int 4:optional:bool"
    ),
    "VsphereVirtualDiskVolumeSource": "1:volumePath 2:fsType 3:storagePolicyName 4:storagePolicyID",
    "QuobyteVolumeSource": "1:registry 2:volume 3:readOnly:obool 4:user 5:group 6:tenant",
    "AzureDiskVolumeSource": "1:diskName 2:diskURI 3:cachingMode 4:fsType 5:readOnly:bool 6:kind",
    "PhotonPersistentDiskVolumeSource": "1:pdID 2:fsType",
    "ProjectedVolumeSource": "1:sources:[]VolumeProjection 2:defaultMode:int",
    "VolumeProjection": (
        "1:secret:SecretProjection 2:downwardAPI:DownwardAPIProjection 3:configMap:ConfigMapProjection"
        " 4:serviceAccountToken:ServiceAccountTokenProjection"
        " 5:clusterTrustBundle:ClusterTrustBundleProjection 6:podCertificate:PodCertificateProjection"
    ),
    "SecretProjection": _LOCAL_REF_PROJ,
    "ConfigMapProjection": _LOCAL_REF_PROJ,
    "DownwardAPIProjection": "1:items:[]DownwardAPIVolumeFile",
    "ServiceAccountTokenProjection": "1:audience 2:expirationSeconds:int 3:path",
    "ClusterTrustBundleProjection": (
        "1:name 2:signerName 3:labelSelector:LabelSelector 5:optional:bool 4:path"
    ),
    "PodCertificateProjection": (
        "1:signerName 2:keyType 3:maxExpirationSeconds:int 4:credentialBundlePath 5:keyPath"
        " 6:certificateChainPath 7:userAnnotations:{str}"
    ),
    "PortworxVolumeSource": "1:volumeID 2:fsType 3:readOnly:obool",
    "ScaleIOVolumeSource": (
        "1:gateway 2:system 3:secretRef:LocalObjectReference 4:sslEnabled:obool 5:protectionDomain"
        " 6:storagePool 7:storageMode 8:volumeName 9:fsType 10:readOnly:obool"
    ),
    "StorageOSVolumeSource": (
        "1:volumeName 2:volumeNamespace 3:fsType 4:readOnly:obool 5:secretRef:LocalObjectReference"
    ),
    "CSIVolumeSource": (
        "1:driver 2:readOnly:bool 3:fsType 4:volumeAttributes:{str} 5:nodePublishSecretRef:LocalObjectReference"
    ),
    "EphemeralVolumeSource": "1:volumeClaimTemplate:PersistentVolumeClaimTemplate",
    "PersistentVolumeClaimTemplate": f"{_OBJ} 2:spec:PersistentVolumeClaimSpec",
    "ImageVolumeSource": "1:reference 2:pullPolicy",
    # ---- core/v1: pod status ---------------------------------------------------------------------------------
    "PodStatus": (
        "17:observedGeneration:oint 1:phase 2:conditions:[]PodCondition 3:message 4:reason"
        " 11:nominatedNodeName 5:hostIP 16:hostIPs:[]HostIP 6:podIP 12:podIPs:[]PodIP 7:startTime:time"
        " 10:initContainerStatuses:[]ContainerStatus 8:containerStatuses:[]ContainerStatus 9:qosClass"
        " 13:ephemeralContainerStatuses:[]ContainerStatus 14:resize"
        " 15:resourceClaimStatuses:[]PodResourceClaimStatus"
        " 18:extendedResourceClaimStatus:PodExtendedResourceClaimStatus 19:allocatedResources:{qty}"
        " 20:resources:ResourceRequirements"
    ),
    "PodCondition": (
        "1:type 7:observedGeneration:oint 2:status 3:lastProbeTime:time 4:lastTransitionTime:time"
        " 5:reason 6:message"
    ),
    "HostIP": "1:ip",
    "PodIP": "1:ip",
    "ContainerStatus": (
        "1:name 2:state:ContainerState 3:lastState:ContainerState 4:ready:bool 5:restartCount:int 6:image"
        " 7:imageID 8:containerID 9:started:bool 10:allocatedResources:{qty} 11:resources:ResourceRequirements"
        " 12:volumeMounts:[]VolumeMountStatus 13:user:ContainerUser 14:allocatedResourcesStatus:[]ResourceStatus"
        " 15:stopSignal"
    ),
    "ContainerState": (
        "1:waiting:ContainerStateWaiting 2:running:ContainerStateRunning 3:terminated:ContainerStateTerminated"
    ),
    "ContainerStateWaiting": "1:reason 2:message",
    "ContainerStateRunning": "1:startedAt:time",
    "ContainerStateTerminated": (
        "1:exitCode:int 2:signal:oint 3:reason 4:message 5:startedAt:time 6:finishedAt:time 7:containerID"
    ),
    "VolumeMountStatus": "1:name 2:mountPath 3:readOnly:obool 4:recursiveReadOnly 5:volumeStatus:VolumeStatus",
    "VolumeStatus": "1:image:ImageVolumeStatus",
    "ImageVolumeStatus": "1:imageRef",
    "ContainerUser": "1:linux:LinuxContainerUser",
    "LinuxContainerUser": "1:uid:int 2:gid:int 3:supplementalGroups:[]int",
    "ResourceStatus": "1:name 2:resources:[]ResourceHealth",
    "ResourceHealth": "1:resourceID 2:health 6:message",
    "PodResourceClaimStatus": "1:name 2:resourceClaimName",
    "PodExtendedResourceClaimStatus": (
        "1:requestMappings:[]ContainerExtendedResourceRequest 2:resourceClaimName"
    ),
    "ContainerExtendedResourceRequest": "1:containerName 2:resourceName 3:requestName",
    # ---- core/v1: services, endpoints, events, claims, ... ---------------------------------------------------
    "ServiceSpec": (
        "1:ports:[]ServicePort 2:selector:{str} 3:clusterIP 18:clusterIPs:[]str 4:type 5:externalIPs:[]str"
        " 7:sessionAffinity 8:loadBalancerIP 9:loadBalancerSourceRanges:[]str 10:externalName"
        " 11:externalTrafficPolicy 12:healthCheckNodePort:oint 13:publishNotReadyAddresses:obool"
        " 14:sessionAffinityConfig:SessionAffinityConfig 19:ipFamilies:[]str 17:ipFamilyPolicy"
        " 20:allocateLoadBalancerNodePorts:bool 21:loadBalancerClass 22:internalTrafficPolicy"
        " 23:trafficDistribution"
    ),
    "ServicePort": "1:name 2:protocol 6:appProtocol 3:port:int 4:targetPort:ios 5:nodePort:oint",
    "SessionAffinityConfig": "1:clientIP:ClientIPConfig",
    "ClientIPConfig": "1:timeoutSeconds:int",
    "ServiceStatus": "1:loadBalancer:LoadBalancerStatus 2:conditions:[]Condition",
    "LoadBalancerStatus": "1:ingress:[]LoadBalancerIngress",
    "LoadBalancerIngress": "1:ip 2:hostname 3:ipMode 4:ports:[]PortStatus",
    "PortStatus": "1:port:int 2:protocol 3:error",
    "EndpointSubset": (
        "1:addresses:[]EndpointAddress 2:notReadyAddresses:[]EndpointAddress 3:ports:[]EndpointPort"
    ),
    "EndpointAddress": "1:ip 3:hostname 4:nodeName 2:targetRef:ObjectReference",
    "EndpointPort": "1:name 2:port:int 3:protocol 4:appProtocol",
    "ObjectReference": "1:kind 2:namespace 3:name 4:uid 5:apiVersion 6:resourceVersion 7:fieldPath",
    "EventSource": "1:component 2:host",
    "EventSeries": "1:count:oint 2:lastObservedTime:mtime",
    "PersistentVolumeClaimSpec": (
        "1:accessModes:[]str 4:selector:LabelSelector 2:resources:VolumeResourceRequirements 3:volumeName"
        " 5:storageClassName 6:volumeMode 7:dataSource:TypedLocalObjectReference"
        " 8:dataSourceRef:TypedObjectReference 9:volumeAttributesClassName"
    ),
    "VolumeResourceRequirements": "1:limits:{qty} 2:requests:{qty}",
    "TypedLocalObjectReference": "1:apiGroup 2:kind 3:name",
    "TypedObjectReference": "1:apiGroup 2:kind 3:name 4:namespace",
    "PersistentVolumeClaimStatus": (
        "1:phase 2:accessModes:[]str 3:capacity:{qty} 4:conditions:[]PersistentVolumeClaimCondition"
        " 5:allocatedResources:{qty} 7:allocatedResourceStatuses:{str} 8:currentVolumeAttributesClassName"
        " 9:modifyVolumeStatus:ModifyVolumeStatus"
    ),
    "PersistentVolumeClaimCondition": _CONDITION_PROBED,
    "ModifyVolumeStatus": "1:targetVolumeAttributesClassName 2:status",
    "ReplicationControllerSpec": (
        "1:replicas:int 4:minReadySeconds:oint 2:selector:{str} 3:template:PodTemplateSpec"
    ),
    "ReplicationControllerStatus": (
        "1:replicas:int 2:fullyLabeledReplicas:oint 4:readyReplicas:oint 5:availableReplicas:oint"
        " 3:observedGeneration:oint 6:conditions:[]WorkloadCondition"
    ),
    "LimitRangeSpec": "1:limits:[]LimitRangeItem",
    "LimitRangeItem": (
        "1:type 2:max:{qty} 3:min:{qty} 4:default:{qty} 5:defaultRequest:{qty} 6:maxLimitRequestRatio:{qty}"
    ),
    "ResourceQuotaSpec": "1:hard:{qty} 2:scopes:[]str 3:scopeSelector:ScopeSelector",
    "ResourceQuotaStatus": "1:hard:{qty} 2:used:{qty}",
    "ScopeSelector": "1:matchExpressions:[]ScopedResourceSelectorRequirement",
    "ScopedResourceSelectorRequirement": "1:scopeName 2:operator 3:values:[]str",
    # ReplicationController/ReplicaSet/DaemonSet/StatefulSet conditions share one layout.
    "WorkloadCondition": _CONDITION,
    # ---- apps/v1 ---------------------------------------------------------------------------------------------
    "Deployment": f"{_OBJ} 2:spec:DeploymentSpec 3:status:DeploymentStatus",
    "DeploymentSpec": (
        "1:replicas:int 2:selector:LabelSelector 3:template:PodTemplateSpec 4:strategy:DeploymentStrategy"
        " 5:minReadySeconds:oint 6:revisionHistoryLimit:int 7:paused:obool 9:progressDeadlineSeconds:int"
        " 10:podReplacementPolicy"
    ),
    "DeploymentStrategy": "1:type 2:rollingUpdate:RollingUpdateDeployment",
    "RollingUpdateDeployment": _ROLLING,
    "DeploymentStatus": (
        "1:observedGeneration:oint 2:replicas:oint 3:updatedReplicas:oint 7:readyReplicas:oint"
        " 4:availableReplicas:oint 5:unavailableReplicas:oint 9:terminatingReplicas:int"
        " 6:conditions:[]DeploymentCondition 8:collisionCount:int"
    ),
    "DeploymentCondition": (
        "1:type 2:status 6:lastUpdateTime:time 7:lastTransitionTime:time 4:reason 5:message"
    ),
    "ReplicaSet": f"{_OBJ} 2:spec:ReplicaSetSpec 3:status:ReplicaSetStatus",
    "ReplicaSetSpec": (
        "1:replicas:int 4:minReadySeconds:oint 2:selector:LabelSelector 3:template:PodTemplateSpec"
    ),
    "ReplicaSetStatus": (
        "1:replicas:int 2:fullyLabeledReplicas:oint 4:readyReplicas:oint 5:availableReplicas:oint"
        " 7:terminatingReplicas:int 3:observedGeneration:oint 6:conditions:[]WorkloadCondition"
    ),
    "DaemonSet": f"{_OBJ} 2:spec:DaemonSetSpec 3:status:DaemonSetStatus",
    "DaemonSetSpec": (
        "1:selector:LabelSelector 2:template:PodTemplateSpec 3:updateStrategy:DaemonSetUpdateStrategy"
        " 4:minReadySeconds:oint 6:revisionHistoryLimit:int"
    ),
    "DaemonSetUpdateStrategy": "1:type 2:rollingUpdate:RollingUpdateDaemonSet",
    "RollingUpdateDaemonSet": _ROLLING,
    "DaemonSetStatus": (
        "1:currentNumberScheduled:int 2:numberMisscheduled:int 3:desiredNumberScheduled:int"
        " 4:numberReady:int 5:observedGeneration:oint 6:updatedNumberScheduled:oint 7:numberAvailable:oint"
        " 8:numberUnavailable:oint 9:collisionCount:int 10:conditions:[]WorkloadCondition"
    ),
    "StatefulSet": f"{_OBJ} 2:spec:StatefulSetSpec 3:status:StatefulSetStatus",
    "StatefulSetSpec": (
        "1:replicas:int 2:selector:LabelSelector 3:template:PodTemplateSpec"
        " 4:volumeClaimTemplates:[]PersistentVolumeClaim 5:serviceName 6:podManagementPolicy"
        " 7:updateStrategy:StatefulSetUpdateStrategy 8:revisionHistoryLimit:int 9:minReadySeconds:oint"
        " 10:persistentVolumeClaimRetentionPolicy:StatefulSetPersistentVolumeClaimRetentionPolicy"
        " 11:ordinals:StatefulSetOrdinals"
    ),
    "StatefulSetUpdateStrategy": "1:type 2:rollingUpdate:RollingUpdateStatefulSetStrategy",
    "RollingUpdateStatefulSetStrategy": "1:partition:int 2:maxUnavailable:ios",
    "StatefulSetPersistentVolumeClaimRetentionPolicy": "1:whenDeleted 2:whenScaled",
    "StatefulSetOrdinals": "1:start:int",
    "StatefulSetStatus": (
        "1:observedGeneration:oint 2:replicas:int 3:readyReplicas:oint 4:currentReplicas:oint"
        " 5:updatedReplicas:oint 6:currentRevision 7:updateRevision 9:collisionCount:int"
        " 10:conditions:[]WorkloadCondition 11:availableReplicas:int"
    ),
    "ControllerRevision": f"{_OBJ} 2:data:raw 3:revision:int",
    # ---- batch/v1 --------------------------------------------------------------------------------------------
    "Job": f"{_OBJ} 2:spec:JobSpec 3:status:JobStatus",
    "JobSpec": (
        "1:parallelism:int 2:completions:int 3:activeDeadlineSeconds:int 11:podFailurePolicy:PodFailurePolicy"
        " 16:successPolicy:SuccessPolicy 7:backoffLimit:int 12:backoffLimitPerIndex:int"
        " 13:maxFailedIndexes:int 4:selector:LabelSelector 5:manualSelector:bool 6:template:PodTemplateSpec"
        " 8:ttlSecondsAfterFinished:int 9:completionMode 10:suspend:bool 14:podReplacementPolicy 15:managedBy"
    ),
    "JobStatus": (
        "1:conditions:[]JobCondition 2:startTime:time 3:completionTime:time 4:active:oint 5:succeeded:oint"
        " 6:failed:oint 11:terminating:int 7:completedIndexes 10:failedIndexes"
        " 8:uncountedTerminatedPods:UncountedTerminatedPods 9:ready:int"
    ),
    "JobCondition": _CONDITION_PROBED,
    "UncountedTerminatedPods": "1:succeeded:[]str 2:failed:[]str",
    "PodFailurePolicy": "1:rules:[]PodFailurePolicyRule",
    "PodFailurePolicyRule": (
        "1:action 2:onExitCodes:PodFailurePolicyOnExitCodesRequirement"
        " 3:onPodConditions:[]PodFailurePolicyOnPodConditionsPattern"
    ),
    "PodFailurePolicyOnExitCodesRequirement": "1:containerName 2:operator 3:values:[]int",
    "PodFailurePolicyOnPodConditionsPattern": "1:type 2:status",
    "SuccessPolicy": "1:rules:[]SuccessPolicyRule",
    "SuccessPolicyRule": "1:succeededIndexes 2:succeededCount:int",
    "CronJob": f"{_OBJ} 2:spec:CronJobSpec 3:status:CronJobStatus",
    "CronJobSpec": (
        "1:schedule 8:timeZone 2:startingDeadlineSeconds:int 3:concurrencyPolicy 4:suspend:bool"
        " 5:jobTemplate:JobTemplateSpec 6:successfulJobsHistoryLimit:int 7:failedJobsHistoryLimit:int"
    ),
    "JobTemplateSpec": f"{_OBJ} 2:spec:JobSpec",
    "CronJobStatus": "1:active:[]ObjectReference 4:lastScheduleTime:time 5:lastSuccessfulTime:time",
    # ---- discovery.k8s.io/v1 (its Endpoint* differ from core's) ----------------------------------------------
    "discovery.EndpointSlice": (
        f"{_OBJ} 4:addressType 2:endpoints:[]discovery.Endpoint 3:ports:[]discovery.EndpointPort"
    ),
    "discovery.Endpoint": (
        "1:addresses:[]str 2:conditions:discovery.EndpointConditions 3:hostname 4:targetRef:ObjectReference"
        " 5:deprecatedTopology:{str} 6:nodeName 7:zone 8:hints:discovery.EndpointHints"
    ),
    "discovery.EndpointConditions": "1:ready:bool 2:serving:bool 3:terminating:bool",
    "discovery.EndpointHints": "1:forZones:[]discovery.ForZone 2:forNodes:[]discovery.ForNode",
    "discovery.ForZone": "1:name",
    "discovery.ForNode": "1:name",
    "discovery.EndpointPort": "1:name 2:protocol 3:port:int 4:appProtocol",
    # ---- coordination.k8s.io/v1, policy/v1, authentication.k8s.io/v1, autoscaling/v1 --------------------------
    "Lease": f"{_OBJ} 2:spec:LeaseSpec",
    "LeaseSpec": (
        "1:holderIdentity 2:leaseDurationSeconds:int 3:acquireTime:mtime 4:renewTime:mtime"
        " 5:leaseTransitions:int 6:strategy 7:preferredHolder"
    ),
    "Eviction": f"{_OBJ} 2:deleteOptions:DeleteOptions",
    "TokenRequest": f"{_OBJ} 2:spec:TokenRequestSpec 3:status:TokenRequestStatus",
    "TokenRequestSpec": "1:audiences:[]str 4:expirationSeconds:int 3:boundObjectRef:BoundObjectReference",
    "BoundObjectReference": "1:kind 2:apiVersion 3:name 4:uid",  # proto names: aPIVersion, uID
    "TokenRequestStatus": "1:token 2:expirationTimestamp:time",
    "Scale": f"{_OBJ} 2:spec:ScaleSpec 3:status:ScaleStatus",
    "ScaleSpec": "1:replicas:oint",
    "ScaleStatus": "1:replicas:int 2:selector",
    # ---- core/v1 PersistentVolume (the PersistentVolumeSource members not shared with pod volumes) ------------
    "PersistentVolume": f"{_OBJ} 2:spec:PersistentVolumeSpec 3:status:PersistentVolumeStatus",
    "PersistentVolumeSpec": (
        "1:capacity:{qty} 2:^PersistentVolumeSource 3:accessModes:[]str 4:claimRef:ObjectReference"
        " 5:persistentVolumeReclaimPolicy 6:storageClassName 7:mountOptions:[]str 8:volumeMode"
        " 9:nodeAffinity:VolumeNodeAffinity 10:volumeAttributesClassName"
    ),
    "PersistentVolumeSource": (
        "1:gcePersistentDisk:GCEPersistentDiskVolumeSource 2:awsElasticBlockStore:AWSElasticBlockStoreVolumeSource"
        " 3:hostPath:HostPathVolumeSource 4:glusterfs:GlusterfsPersistentVolumeSource 5:nfs:NFSVolumeSource"
        " 6:rbd:RBDPersistentVolumeSource 7:iscsi:ISCSIPersistentVolumeSource 8:cinder:CinderPersistentVolumeSource"
        " 9:cephfs:CephFSPersistentVolumeSource 10:fc:FCVolumeSource 11:flocker:FlockerVolumeSource"
        " 12:flexVolume:FlexPersistentVolumeSource 13:azureFile:AzureFilePersistentVolumeSource"
        " 14:vsphereVolume:VsphereVirtualDiskVolumeSource 15:quobyte:QuobyteVolumeSource"
        " 16:azureDisk:AzureDiskVolumeSource 17:photonPersistentDisk:PhotonPersistentDiskVolumeSource"
        " 18:portworxVolume:PortworxVolumeSource 19:scaleIO:ScaleIOPersistentVolumeSource"
        " 20:local:LocalVolumeSource 21:storageos:StorageOSPersistentVolumeSource"
        " 22:csi:CSIPersistentVolumeSource"
    ),
    "GlusterfsPersistentVolumeSource": "1:endpoints 2:path 3:readOnly:obool 4:endpointsNamespace",
    "RBDPersistentVolumeSource": (
        "1:monitors:[]str 2:image 3:fsType 4:pool 5:user 6:keyring 7:secretRef:SecretReference 8:readOnly:obool"
    ),
    "ISCSIPersistentVolumeSource": (
        "1:targetPortal 2:iqn 3:lun:int 4:iscsiInterface 5:fsType 6:readOnly:obool 7:portals:[]str"
        " 8:chapAuthDiscovery:obool 11:chapAuthSession:obool 10:secretRef:SecretReference 12:initiatorName"
    ),
    "CinderPersistentVolumeSource": "1:volumeID 2:fsType 3:readOnly:obool 4:secretRef:SecretReference",
    "CephFSPersistentVolumeSource": (
        "1:monitors:[]str 2:path 3:user 4:secretFile 5:secretRef:SecretReference 6:readOnly:obool"
    ),
    "FlexPersistentVolumeSource": (
        "1:driver 2:fsType 3:secretRef:SecretReference 4:readOnly:obool 5:options:{str}"
    ),
    "AzureFilePersistentVolumeSource": "1:secretName 2:shareName 3:readOnly:obool 4:secretNamespace",
    "ScaleIOPersistentVolumeSource": (
        "1:gateway 2:system 3:secretRef:SecretReference 4:sslEnabled:obool 5:protectionDomain"
        " 6:storagePool 7:storageMode 8:volumeName 9:fsType 10:readOnly:obool"
    ),
    "StorageOSPersistentVolumeSource": (
        "1:volumeName 2:volumeNamespace 3:fsType 4:readOnly:obool 5:secretRef:ObjectReference"
    ),
    "LocalVolumeSource": "1:path 2:fsType",
    "CSIPersistentVolumeSource": (
        "1:driver 2:volumeHandle 3:readOnly:obool 4:fsType 5:volumeAttributes:{str}"
        " 6:controllerPublishSecretRef:SecretReference 7:nodeStageSecretRef:SecretReference"
        " 8:nodePublishSecretRef:SecretReference 9:controllerExpandSecretRef:SecretReference"
        " 10:nodeExpandSecretRef:SecretReference"
    ),
    "SecretReference": "1:name 2:namespace",
    "VolumeNodeAffinity": "1:required:NodeSelector",
    "PersistentVolumeStatus": "1:phase 2:message 3:reason 4:lastPhaseTransitionTime:time",
    # ---- rbac.authorization.k8s.io/v1 ------------------------------------------------------------------------
    "Role": f"{_OBJ} 2:rules:[]PolicyRule",
    "ClusterRole": f"{_OBJ} 2:rules:[]PolicyRule 3:aggregationRule:AggregationRule",
    "RoleBinding": f"{_OBJ} 2:subjects:[]Subject 3:roleRef:RoleRef",
    "ClusterRoleBinding": f"{_OBJ} 2:subjects:[]Subject 3:roleRef:RoleRef",
    "PolicyRule": "1:verbs:[]str 2:apiGroups:[]str 3:resources:[]str 4:resourceNames:[]str 5:nonResourceURLs:[]str",
    "AggregationRule": "1:clusterRoleSelectors:[]LabelSelector",
    # Subject.apiGroup and RoleRef.apiGroup are plain strings without omitempty ("" is meaningful for
    # ServiceAccount subjects): a decoded "" is still dropped and server defaulting fills it back in.
    "Subject": "1:kind 2:apiGroup 3:name 4:namespace",
    "RoleRef": "1:apiGroup 2:kind 3:name",
    # ---- policy/v1, scheduling.k8s.io/v1 ---------------------------------------------------------------------
    "PodDisruptionBudget": f"{_OBJ} 2:spec:PodDisruptionBudgetSpec 3:status:PodDisruptionBudgetStatus",
    "PodDisruptionBudgetSpec": (
        "1:minAvailable:ios 2:selector:LabelSelector 3:maxUnavailable:ios 4:unhealthyPodEvictionPolicy"
    ),
    # disruptedPods (2, map<string, Time>) is a status-only map kubectl never sends: left to the skipper.
    "PodDisruptionBudgetStatus": (
        "1:observedGeneration:oint 3:disruptionsAllowed:int 4:currentHealthy:int 5:desiredHealthy:int"
        " 6:expectedPods:int 7:conditions:[]Condition"
    ),
    "PriorityClass": f"{_OBJ} 2:value:int 3:globalDefault:obool 4:description 5:preemptionPolicy",
    # ---- networking.k8s.io/v1 (its IngressLoadBalancer* differ from core's) ----------------------------------
    "Ingress": f"{_OBJ} 2:spec:IngressSpec 3:status:IngressStatus",
    "IngressSpec": (
        "4:ingressClassName 1:defaultBackend:IngressBackend 2:tls:[]IngressTLS 3:rules:[]IngressRule"
    ),
    "IngressBackend": "4:service:IngressServiceBackend 3:resource:TypedLocalObjectReference",
    "IngressServiceBackend": "1:name 2:port:ServiceBackendPort",
    "ServiceBackendPort": "1:name 2:number:oint",
    "IngressTLS": "1:hosts:[]str 2:secretName",
    "IngressRule": "1:host 2:^IngressRuleValue",
    "IngressRuleValue": "1:http:HTTPIngressRuleValue",
    "HTTPIngressRuleValue": "1:paths:[]HTTPIngressPath",
    "HTTPIngressPath": "1:path 3:pathType 2:backend:IngressBackend",
    "IngressStatus": "1:loadBalancer:IngressLoadBalancerStatus",
    "IngressLoadBalancerStatus": "1:ingress:[]IngressLoadBalancerIngress",
    "IngressLoadBalancerIngress": "1:ip 2:hostname 4:ports:[]IngressPortStatus",
    "IngressPortStatus": "1:port:int 2:protocol 3:error",
    "IngressClass": f"{_OBJ} 2:spec:IngressClassSpec",
    "IngressClassSpec": "1:controller 2:parameters:IngressClassParametersReference",
    "IngressClassParametersReference": "1:apiGroup 2:kind 3:name 4:scope 5:namespace",  # proto: aPIGroup
    "NetworkPolicy": f"{_OBJ} 2:spec:NetworkPolicySpec",
    "NetworkPolicySpec": (
        "1:podSelector:LabelSelector 2:ingress:[]NetworkPolicyIngressRule 3:egress:[]NetworkPolicyEgressRule"
        " 4:policyTypes:[]str"
    ),
    "NetworkPolicyIngressRule": "1:ports:[]NetworkPolicyPort 2:from:[]NetworkPolicyPeer",
    "NetworkPolicyEgressRule": "1:ports:[]NetworkPolicyPort 2:to:[]NetworkPolicyPeer",
    "NetworkPolicyPort": "1:protocol 2:port:ios 3:endPort:int",
    "NetworkPolicyPeer": "1:podSelector:LabelSelector 2:namespaceSelector:LabelSelector 3:ipBlock:IPBlock",
    "IPBlock": "1:cidr 2:except:[]str",
    # ---- autoscaling/v2 --------------------------------------------------------------------------------------
    "autoscaling.HorizontalPodAutoscaler": (
        f"{_OBJ} 2:spec:autoscaling.HorizontalPodAutoscalerSpec 3:status:autoscaling.HorizontalPodAutoscalerStatus"
    ),
    "autoscaling.HorizontalPodAutoscalerSpec": (
        "1:scaleTargetRef:autoscaling.CrossVersionObjectReference 2:minReplicas:int 3:maxReplicas:int"
        " 4:metrics:[]autoscaling.MetricSpec 5:behavior:autoscaling.HorizontalPodAutoscalerBehavior"
    ),
    "autoscaling.CrossVersionObjectReference": "1:kind 2:name 3:apiVersion",
    "autoscaling.MetricSpec": (
        "1:type 2:object:autoscaling.ObjectMetricSource 3:pods:autoscaling.PodsMetricSource"
        " 4:resource:autoscaling.ResourceMetricSource 7:containerResource:autoscaling.ContainerResourceMetricSource"
        " 5:external:autoscaling.ExternalMetricSource"
    ),
    "autoscaling.ObjectMetricSource": (
        "1:describedObject:autoscaling.CrossVersionObjectReference 2:target:autoscaling.MetricTarget"
        " 3:metric:autoscaling.MetricIdentifier"
    ),
    "autoscaling.PodsMetricSource": "1:metric:autoscaling.MetricIdentifier 2:target:autoscaling.MetricTarget",
    "autoscaling.ResourceMetricSource": "1:name 2:target:autoscaling.MetricTarget",
    "autoscaling.ContainerResourceMetricSource": "1:name 2:target:autoscaling.MetricTarget 3:container",
    "autoscaling.ExternalMetricSource": "1:metric:autoscaling.MetricIdentifier 2:target:autoscaling.MetricTarget",
    "autoscaling.MetricIdentifier": "1:name 2:selector:LabelSelector",
    "autoscaling.MetricTarget": "1:type 2:value:qty 3:averageValue:qty 4:averageUtilization:int",
    "autoscaling.HorizontalPodAutoscalerBehavior": (
        "1:scaleUp:autoscaling.HPAScalingRules 2:scaleDown:autoscaling.HPAScalingRules"
    ),
    "autoscaling.HPAScalingRules": (
        "3:stabilizationWindowSeconds:int 1:selectPolicy 2:policies:[]autoscaling.HPAScalingPolicy 4:tolerance:qty"
    ),
    "autoscaling.HPAScalingPolicy": "1:type 2:value:int 3:periodSeconds:int",
    "autoscaling.HorizontalPodAutoscalerStatus": (
        "1:observedGeneration:int 2:lastScaleTime:time 3:currentReplicas:oint 4:desiredReplicas:int"
        " 5:currentMetrics:[]autoscaling.MetricStatus 6:conditions:[]autoscaling.HorizontalPodAutoscalerCondition"
    ),
    "autoscaling.MetricStatus": (
        "1:type 2:object:autoscaling.ObjectMetricStatus 3:pods:autoscaling.PodsMetricStatus"
        " 4:resource:autoscaling.ResourceMetricStatus 7:containerResource:autoscaling.ContainerResourceMetricStatus"
        " 5:external:autoscaling.ExternalMetricStatus"
    ),
    "autoscaling.ObjectMetricStatus": (
        "1:metric:autoscaling.MetricIdentifier 2:current:autoscaling.MetricValueStatus"
        " 3:describedObject:autoscaling.CrossVersionObjectReference"
    ),
    "autoscaling.PodsMetricStatus": "1:metric:autoscaling.MetricIdentifier 2:current:autoscaling.MetricValueStatus",
    "autoscaling.ResourceMetricStatus": "1:name 2:current:autoscaling.MetricValueStatus",
    "autoscaling.ContainerResourceMetricStatus": "1:name 2:current:autoscaling.MetricValueStatus 3:container",
    "autoscaling.ExternalMetricStatus": (
        "1:metric:autoscaling.MetricIdentifier 2:current:autoscaling.MetricValueStatus"
    ),
    "autoscaling.MetricValueStatus": "1:value:qty 2:averageValue:qty 3:averageUtilization:int",
    "autoscaling.HorizontalPodAutoscalerCondition": (
        "1:type 2:status 3:lastTransitionTime:time 4:reason 5:message 6:observedGeneration:oint"
    ),
    # ---- storage.k8s.io/v1 -----------------------------------------------------------------------------------
    "StorageClass": (
        f"{_OBJ} 2:provisioner 3:parameters:{{str}} 4:reclaimPolicy 5:mountOptions:[]str"
        " 6:allowVolumeExpansion:bool 7:volumeBindingMode 8:allowedTopologies:[]TopologySelectorTerm"
    ),
    "TopologySelectorTerm": "1:matchLabelExpressions:[]TopologySelectorLabelRequirement",
    "TopologySelectorLabelRequirement": "1:key 2:values:[]str",
}

# (apiVersion, kind) -> root message.  DeleteOptions is accepted under any apiVersion (every group registers it).
KINDS: Final[dict[tuple[str, str], str]] = {
    **{
        ("v1", k): k
        for k in (
            "Namespace Node Pod ConfigMap Secret Service Endpoints Event ServiceAccount PersistentVolumeClaim"
            " Binding PodTemplate ReplicationController LimitRange ResourceQuota DeleteOptions"
        ).split()
    },
    **{
        ("apps/v1", k): k
        for k in "Deployment ReplicaSet DaemonSet StatefulSet ControllerRevision Scale".split()
    },
    ("batch/v1", "Job"): "Job",
    ("batch/v1", "CronJob"): "CronJob",
    ("discovery.k8s.io/v1", "EndpointSlice"): "discovery.EndpointSlice",
    ("coordination.k8s.io/v1", "Lease"): "Lease",
    ("policy/v1", "Eviction"): "Eviction",
    ("policy/v1beta1", "Eviction"): "Eviction",
    ("authentication.k8s.io/v1", "TokenRequest"): "TokenRequest",
    ("autoscaling/v1", "Scale"): "Scale",
    ("v1", "PersistentVolume"): "PersistentVolume",
    **{
        ("rbac.authorization.k8s.io/v1", k): k
        for k in ("Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding")
    },
    ("policy/v1", "PodDisruptionBudget"): "PodDisruptionBudget",
    ("scheduling.k8s.io/v1", "PriorityClass"): "PriorityClass",
    **{("networking.k8s.io/v1", k): k for k in ("Ingress", "IngressClass", "NetworkPolicy")},
    ("autoscaling/v2", "HorizontalPodAutoscaler"): "autoscaling.HorizontalPodAutoscaler",
    ("storage.k8s.io/v1", "StorageClass"): "StorageClass",
    ("meta.k8s.io/v1", "DeleteOptions"): "DeleteOptions",
}

# --------------------------------------------------------------------------------------------------------------
# Compiled schema: message -> {field number: (json name, kind, sub-message or map value kind, repeated)}.
# Kinds are small ints so the hot loop dispatches on int compares, not strings.
# --------------------------------------------------------------------------------------------------------------

(
    _STR,
    _BYTES,
    _BOOL,
    _INT,
    _OBOOL,
    _OINT,
    _TIME,
    _MTIME,
    _DUR,
    _QTY,
    _IOS,
    _RAW,
    _FIELDSV1,
    _MSG,
    _INLINE,
    _MAP,
) = range(16)
_SCALARS: Final = {
    "str": _STR,
    "bytes": _BYTES,
    "bool": _BOOL,
    "int": _INT,
    "obool": _OBOOL,
    "oint": _OINT,
    "time": _TIME,
    "mtime": _MTIME,
    "dur": _DUR,
    "qty": _QTY,
    "ios": _IOS,
    "raw": _RAW,
    "fieldsv1": _FIELDSV1,
}
_MAP_VALUES: Final = {"str": _STR, "bytes": _BYTES, "qty": _QTY}
_INT_OR_BOOL: Final = tuple(k in (_INT, _OINT, _BOOL, _OBOOL) for k in range(_MAP + 1))

# sub: the message name for _MSG/_INLINE, the value kind (int) or message name (str) for _MAP.
_Field = tuple[str, int, str | int | None, bool]
_Message = dict[int, _Field]


def _compile(schema: dict[str, str]) -> dict[str, _Message]:
    compiled: dict[str, _Message] = {}
    for msg, spec in schema.items():
        fields: _Message = {}
        for token in spec.split():
            parts = token.split(":")
            num = int(parts[0])
            if num in fields:
                raise ValueError(f"protobuf schema: {msg} field {num} declared twice")
            if parts[1].startswith("^"):
                fields[num] = ("", _INLINE, parts[1][1:], False)
                continue
            name, typ = parts[1], (parts[2] if len(parts) > 2 else "str")
            repeated = typ.startswith("[]")
            if repeated:
                typ = typ[2:]
            if typ.startswith("{"):
                value = typ[1:-1]
                fields[num] = (name, _MAP, _MAP_VALUES.get(value, value), False)
            elif typ in _SCALARS:
                fields[num] = (name, _SCALARS[typ], None, repeated)
            else:
                fields[num] = (name, _MSG, typ, repeated)
        compiled[msg] = fields
    # Fail at import, not at the first request, on a reference to a message the table lacks.
    for msg, fields in compiled.items():
        for name, kind, sub, _ in fields.values():
            if kind in (_MSG, _INLINE) or (kind == _MAP and isinstance(sub, str)):
                if sub not in compiled:
                    raise ValueError(f"protobuf schema: {msg}.{name} refers to unknown message {sub}")
    return compiled


_MESSAGES: Final = _compile(SCHEMA)


def supported_kinds() -> set[tuple[str, str]]:
    """The (apiVersion, kind) pairs :func:`decode` understands (DeleteOptions also under any apiVersion)."""
    return set(KINDS)


# --------------------------------------------------------------------------------------------------------------
# Wire-level readers.  They work on (buf, pos, end) to avoid slicing copies; `end` bounds the current message.
# --------------------------------------------------------------------------------------------------------------


def _varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while pos < end:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise _Malformed("varint longer than 10 bytes")
    raise _Malformed("truncated varint")


def _signed(v: int) -> int:
    # int32 and int64 are both sent as two's complement 64-bit varints (negative int32 is sign-extended).
    return v - (1 << 64) if v >= 1 << 63 else v


def _length(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    n, pos = _varint(buf, pos, end)
    if n > end - pos:
        raise _Malformed(f"length {n} runs past the end of the message ({end - pos} bytes left)")
    return pos + n, pos


def _skip(buf: bytes, pos: int, end: int, wire: int) -> int:
    if wire == 0:
        return _varint(buf, pos, end)[1]
    if wire == 2:
        return _length(buf, pos, end)[0]
    width = 8 if wire == 1 else 4 if wire == 5 else 0
    if not width:
        raise _Malformed(f"unsupported wire type {wire}")  # 3/4 are proto groups: never used by Kubernetes
    if pos + width > end:
        raise _Malformed("truncated fixed-width field")
    return pos + width


def _text(buf: bytes, pos: int, end: int) -> str:
    # Go's JSON encoder replaces invalid UTF-8 with U+FFFD; do the same rather than refuse the object.
    return buf[pos:end].decode("utf-8", "replace")


def _pair(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    """Fields 1 and 2 of a message whose fields are varints (Time, MicroTime, Timestamp)."""
    first = second = 0
    while pos < end:
        tag, pos = _varint(buf, pos, end)
        if tag == 0x08:
            v, pos = _varint(buf, pos, end)
            first = _signed(v)
        elif tag == 0x10:
            v, pos = _varint(buf, pos, end)
            second = _signed(v)
        else:
            pos = _skip(buf, pos, end, tag & 7)
    return first, second


def _single_bytes(buf: bytes, pos: int, end: int) -> bytes:
    """Field 1 (length-delimited) of Quantity, RawExtension and FieldsV1."""
    value = b""
    while pos < end:
        tag, pos = _varint(buf, pos, end)
        if tag == 0x0A:
            vend, pos = _length(buf, pos, end)
            value = buf[pos:vend]
            pos = vend
        else:
            pos = _skip(buf, pos, end, tag & 7)
    return value


# --------------------------------------------------------------------------------------------------------------
# Special types.
# --------------------------------------------------------------------------------------------------------------

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_GO_ZERO_TIME: Final = -62135596800  # time.Time{}.Unix(): what gogo writes for an unset non-pointer Time


def _time(buf: bytes, pos: int, end: int, micro: bool) -> str | None:
    if pos == end:  # meta/v1 Time marshals Go's zero time as an empty message
        return None
    seconds, nanos = _pair(buf, pos, end)
    if seconds == _GO_ZERO_TIME and nanos == 0:
        return None
    if not 0 <= nanos < 1_000_000_000:
        raise _Malformed(f"timestamp nanos {nanos} out of range")
    try:
        t = _EPOCH + timedelta(seconds=seconds)
    except OverflowError:
        raise _Malformed(f"timestamp seconds {seconds} out of range") from None
    if micro:
        return f"{t:%Y-%m-%dT%H:%M:%S}.{nanos // 1000:06d}Z"
    return f"{t:%Y-%m-%dT%H:%M:%S}Z"


def _go_fraction(value: int, digits: int) -> str:
    whole, frac = divmod(value, 10**digits)
    if not frac:
        return str(whole)
    return f"{whole}.{frac:0{digits}d}".rstrip("0")


def go_duration(ns: int) -> str:
    """Go's ``time.Duration.String`` (``1h0m0s``, ``1.5s``, ``300ms``), the JSON form of meta/v1 Duration."""
    if ns == 0:
        return "0s"
    sign = "-" if ns < 0 else ""
    u = abs(ns)
    if u < 1_000:
        return f"{sign}{u}ns"
    if u < 1_000_000:
        return f"{sign}{_go_fraction(u, 3)}µs"
    if u < 1_000_000_000:
        return f"{sign}{_go_fraction(u, 6)}ms"
    hours, rest = divmod(u, 3_600_000_000_000)
    minutes, rest = divmod(rest, 60_000_000_000)
    out = sign
    if hours:
        out += f"{hours}h"
    if hours or minutes:
        out += f"{minutes}m"
    return out + _go_fraction(rest, 9) + "s"


def _int_or_string(buf: bytes, pos: int, end: int) -> int | str:
    typ = int_val = 0
    str_val = ""
    while pos < end:
        tag, pos = _varint(buf, pos, end)
        if tag == 0x08:
            typ, pos = _varint(buf, pos, end)
        elif tag == 0x10:
            v, pos = _varint(buf, pos, end)
            int_val = _signed(v)
        elif tag == 0x1A:
            vend, pos = _length(buf, pos, end)
            str_val = _text(buf, pos, vend)
            pos = vend
        else:
            pos = _skip(buf, pos, end, tag & 7)
    return str_val if typ == 1 else int_val


def _embedded_json(raw: bytes) -> Any:
    """RawExtension/FieldsV1 payload: JSON as a rule; a nested k8s protobuf object is decoded too."""
    if not raw:
        return None
    if raw.startswith(MAGIC):
        return decode(raw)
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise _Malformed(f"embedded object is neither JSON nor k8s protobuf: {e}") from None


# --------------------------------------------------------------------------------------------------------------
# The message decoder.
# --------------------------------------------------------------------------------------------------------------


def _decode_message(buf: bytes, pos: int, end: int, msg: str, out: Obj, path: str) -> Obj:
    fields = _MESSAGES[msg]
    name = ""
    try:
        while pos < end:
            b = buf[pos]  # tags of fields 1..15 fit in one byte: the common case
            if b < 0x80:
                tag = b
                pos += 1
            else:
                tag, pos = _varint(buf, pos, end)
            wire = tag & 7
            if tag < 8:
                raise _Malformed("field number 0")
            field = fields.get(tag >> 3)
            if field is None:  # a field newer than this table (or a proto3 group): skip it
                name = f"#{tag >> 3}"
                pos = _skip(buf, pos, end, wire)
                continue
            name, kind, sub, repeated = field
            if wire == 2:
                if pos < end and buf[pos] < 0x80:  # lengths below 128: the common case, inlined
                    vend = pos + 1 + buf[pos]
                    pos += 1
                    if vend > end:
                        raise _Malformed(f"length {vend - pos} runs past the end of the message")
                else:
                    vend, pos = _length(buf, pos, end)
                if kind == _STR:
                    value: Any = buf[pos:vend].decode("utf-8", "replace")
                elif kind == _MSG:
                    assert isinstance(sub, str)
                    if repeated:
                        items = out.setdefault(name, [])
                        value = _decode_message(buf, pos, vend, sub, {}, f"{path}.{name}[{len(items)}]")
                        items.append(value)
                        pos = vend
                        continue
                    # proto2 merges a repeated occurrence of a singular message into the earlier one.
                    prior = out.get(name)
                    value = _decode_message(
                        buf, pos, vend, sub, prior if isinstance(prior, dict) else {}, f"{path}.{name}"
                    )
                elif kind == _INLINE:
                    assert isinstance(sub, str)
                    _decode_message(buf, pos, vend, sub, out, path)
                    pos = vend
                    continue
                elif kind == _MAP:
                    key, value = _map_entry(buf, pos, vend, sub, f"{path}.{name}")
                    out.setdefault(name, {})[key] = value
                    pos = vend
                    continue
                elif kind == _BYTES:
                    value = base64.b64encode(buf[pos:vend]).decode("ascii")
                elif kind == _QTY:
                    value = _single_bytes(buf, pos, vend).decode("utf-8", "replace")
                elif kind == _TIME or kind == _MTIME:
                    value = _time(buf, pos, vend, kind == _MTIME)
                elif kind == _IOS:
                    value = _int_or_string(buf, pos, vend)
                elif kind == _RAW or kind == _FIELDSV1:
                    value = _embedded_json(_single_bytes(buf, pos, vend))
                elif kind == _DUR:
                    value = go_duration(_pair(buf, pos, vend)[0])
                elif repeated and _INT_OR_BOOL[kind]:  # packed repeated varints
                    items = out.setdefault(name, [])
                    while pos < vend:
                        v, pos = _varint(buf, pos, vend)
                        items.append(_signed(v) if kind == _INT else v != 0)
                    if not items:
                        del out[name]
                    continue
                else:
                    raise _Malformed(f"wire type 2 for a {_kind_name(kind)} field")
                pos = vend
            elif wire == 0 and _INT_OR_BOOL[kind]:
                v, pos = _varint(buf, pos, end)
                if kind == _INT or kind == _OINT:
                    value = _signed(v)
                else:
                    value = v != 0
                if not value and (kind == _OINT or kind == _OBOOL):
                    out.pop(name, None)  # zero of a non-pointer omitempty field: unset, as in Go's JSON
                    continue
            else:
                raise _Malformed(f"wire type {wire} for a {_kind_name(kind)} field")
            if repeated:
                out.setdefault(name, []).append(value)
            elif value is None or (value == "" and (kind == _STR or kind == _BYTES or kind == _QTY)):
                out.pop(name, None)  # the "omitempty" rule: see the module docstring
            else:
                out[name] = value
    except _Malformed as e:
        where = f"{path}.{name}" if name else path
        raise ProtobufError(f"malformed protobuf at {where}: {e}") from None
    return out


def _map_entry(buf: bytes, pos: int, end: int, value_kind: str | int | None, path: str) -> tuple[str, Any]:
    """A map<string, V> entry: message { 1: key, 2: value }; a missing part takes V's zero value."""
    key = ""
    value: Any = None
    while pos < end:
        tag, pos = _varint(buf, pos, end)
        if tag == 0x0A:
            vend, pos = _length(buf, pos, end)
            key = _text(buf, pos, vend)
            pos = vend
        elif tag == 0x12:
            vend, pos = _length(buf, pos, end)
            if value_kind == _STR:
                value = _text(buf, pos, vend)
            elif value_kind == _BYTES:
                value = base64.b64encode(buf[pos:vend]).decode("ascii")
            elif value_kind == _QTY:
                value = _single_bytes(buf, pos, vend).decode("utf-8", "replace")
            else:
                assert isinstance(value_kind, str)
                value = _decode_message(buf, pos, vend, value_kind, {}, f"{path}[{key!r}]")
            pos = vend
        else:
            pos = _skip(buf, pos, end, tag & 7)
    if value is None:
        value = {} if isinstance(value_kind, str) else ""
    return key, value


def _kind_name(kind: int) -> str:
    for name, k in _SCALARS.items():
        if k == kind:
            return name
    return {_MSG: "message", _INLINE: "embedded message", _MAP: "map"}.get(kind, "?")


# --------------------------------------------------------------------------------------------------------------
# Entry point.
# --------------------------------------------------------------------------------------------------------------


def _root_message(kind: str, api_version: str | None) -> str:
    if api_version is not None:
        msg = KINDS.get((api_version, kind))
        if msg is None and kind == "DeleteOptions":
            msg = "DeleteOptions"
        if msg is None:
            raise ProtobufError(f"no protobuf schema for {api_version}/{kind}")
        return msg
    matches = {m for (_, k), m in KINDS.items() if k == kind}
    if len(matches) != 1:
        raise ProtobufError(f"no protobuf schema for kind {kind!r} without an apiVersion")
    return matches.pop()


def decode(
    body: bytes | bytearray | memoryview, kind: str | None = None, api_version: str | None = None
) -> Obj:
    """Decode a ``k8s\\x00``-prefixed protobuf body to the object's JSON form.

    ``apiVersion``/``kind`` come from the envelope's typeMeta and appear in the result only when the
    envelope carries them (kubectl often leaves them empty); ``kind``/``api_version`` are the caller's
    hints from the URL, used when the envelope is silent.  Raises :class:`ProtobufError` for a malformed
    body or a kind without a schema (answer 415/400).
    """
    buf = bytes(body)
    if not buf.startswith(MAGIC):
        raise ProtobufError("body does not start with the k8s protobuf magic b'k8s\\x00'")
    end = len(buf)
    pos = len(MAGIC)
    env_api = env_kind = encoding = content_type = ""
    raw_start = raw_end = 0
    try:
        while pos < end:
            tag, pos = _varint(buf, pos, end)
            if tag & 7 != 2:
                pos = _skip(buf, pos, end, tag & 7)
                continue
            vend, pos = _length(buf, pos, end)
            field = tag >> 3
            if field == 1:  # runtime.TypeMeta {1: apiVersion, 2: kind}
                p = pos
                while p < vend:
                    t, p = _varint(buf, p, vend)
                    if t in (0x0A, 0x12):
                        send, p = _length(buf, p, vend)
                        if t == 0x0A:
                            env_api = _text(buf, p, send)
                        else:
                            env_kind = _text(buf, p, send)
                        p = send
                    else:
                        p = _skip(buf, p, vend, t & 7)
            elif field == 2:
                raw_start, raw_end = pos, vend
            elif field == 3:
                encoding = _text(buf, pos, vend)
            elif field == 4:
                content_type = _text(buf, pos, vend)
            pos = vend
    except _Malformed as e:
        raise ProtobufError(f"malformed protobuf envelope (runtime.Unknown): {e}") from None
    if encoding:
        raise ProtobufError(f"unsupported protobuf contentEncoding {encoding!r}")
    if content_type and content_type != PROTOBUF:
        raise ProtobufError(f"unsupported protobuf contentType {content_type!r}")
    the_kind = env_kind or kind
    if not the_kind:
        raise ProtobufError("protobuf body names no kind and none was given")
    msg = _root_message(the_kind, env_api or api_version)
    out: Obj = {}
    if env_api:
        out["apiVersion"] = env_api
    if env_kind:
        out["kind"] = env_kind
    return _decode_message(buf, raw_start, raw_end, msg, out, the_kind)
