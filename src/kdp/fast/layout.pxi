# fast/layout.pxi (included by kdp/_fastpath.pyx after the structs): the size,
# field offsets and (where given) field sizes of every C struct that is a
# record of kdp.fast.contract: the header summary, the conntrack table's and the
# service matcher's. contract.check_compiled() compares them with the dtypes
# and refuses the module on a mismatch (LayoutMismatch); nothing is checked here.

cdef header_t _probe


cdef Py_ssize_t _at(void* field) noexcept:
    return <char*>field - <char*>&_probe


HEADER_STRUCT_SIZE = sizeof(header_t)
HEADER_STRUCT_OFFSETS = {
    "ethertype": _at(&_probe.ethertype), "l3_offset": _at(&_probe.l3_offset),
    "ip_proto": _at(&_probe.ip_proto), "src_ip": _at(&_probe.src_ip),
    "dst_ip": _at(&_probe.dst_ip), "ttl": _at(&_probe.ttl),
    "l4_offset": _at(&_probe.l4_offset), "sport": _at(&_probe.sport),
    "dport": _at(&_probe.dport), "ip_header_ok": _at(&_probe.ip_header_ok),
}
HEADER_STRUCT_SIZES = {
    "ethertype": sizeof(_probe.ethertype), "l3_offset": sizeof(_probe.l3_offset),
    "ip_proto": sizeof(_probe.ip_proto), "src_ip": sizeof(_probe.src_ip),
    "dst_ip": sizeof(_probe.dst_ip), "ttl": sizeof(_probe.ttl),
    "l4_offset": sizeof(_probe.l4_offset), "sport": sizeof(_probe.sport),
    "dport": sizeof(_probe.dport), "ip_header_ok": sizeof(_probe.ip_header_ok),
}


cdef ct_entry_t _p_ent
cdef ct_export_t _p_exp
cdef flow_t _p_flow
cdef ct_result_t _p_res


cdef Py_ssize_t _off(void* base, void* field) noexcept:
    return <char*>field - <char*>base


CT_ENTRY_STRUCT = (sizeof(ct_entry_t), {
    "timeout_at": _off(&_p_ent, &_p_ent.timeout_at),
    "osrc": _off(&_p_ent, &_p_ent.osrc), "odst": _off(&_p_ent, &_p_ent.odst),
    "osport": _off(&_p_ent, &_p_ent.osport), "odport": _off(&_p_ent, &_p_ent.odport),
    "id": _off(&_p_ent, &_p_ent.id), "status": _off(&_p_ent, &_p_ent.status),
    "tcp": _off(&_p_ent, &_p_ent.tcp), "proto": _off(&_p_ent, &_p_ent.proto),
    "flags": _off(&_p_ent, &_p_ent.flags), "masq_dev": _off(&_p_ent, &_p_ent.masq_dev),
    "pad": _off(&_p_ent, &_p_ent.pad),
}, {
    "timeout_at": sizeof(_p_ent.timeout_at), "osrc": sizeof(_p_ent.osrc),
    "osport": sizeof(_p_ent.osport), "id": sizeof(_p_ent.id), "status": sizeof(_p_ent.status),
    "tcp": sizeof(_p_ent.tcp), "proto": sizeof(_p_ent.proto), "flags": sizeof(_p_ent.flags),
    "masq_dev": sizeof(_p_ent.masq_dev), "pad": sizeof(_p_ent.pad),
})
CT_EXPORT_STRUCT = (sizeof(ct_export_t), {
    "timeout_at": _off(&_p_exp, &_p_exp.timeout_at), "created": _off(&_p_exp, &_p_exp.created),
    "osrc": _off(&_p_exp, &_p_exp.osrc), "odst": _off(&_p_exp, &_p_exp.odst),
    "osport": _off(&_p_exp, &_p_exp.osport), "odport": _off(&_p_exp, &_p_exp.odport),
    "rsrc": _off(&_p_exp, &_p_exp.rsrc), "rdst": _off(&_p_exp, &_p_exp.rdst),
    "rsport": _off(&_p_exp, &_p_exp.rsport), "rdport": _off(&_p_exp, &_p_exp.rdport),
    "id": _off(&_p_exp, &_p_exp.id), "mark": _off(&_p_exp, &_p_exp.mark),
    "status": _off(&_p_exp, &_p_exp.status), "tcp": _off(&_p_exp, &_p_exp.tcp),
    "proto": _off(&_p_exp, &_p_exp.proto), "masq_dev": _off(&_p_exp, &_p_exp.masq_dev),
    "flags": _off(&_p_exp, &_p_exp.flags),
}, {
    "timeout_at": sizeof(_p_exp.timeout_at), "created": sizeof(_p_exp.created),
    "osrc": sizeof(_p_exp.osrc), "osport": sizeof(_p_exp.osport), "id": sizeof(_p_exp.id),
    "mark": sizeof(_p_exp.mark), "status": sizeof(_p_exp.status), "tcp": sizeof(_p_exp.tcp),
    "proto": sizeof(_p_exp.proto), "flags": sizeof(_p_exp.flags),
})
FLOW_STRUCT = (sizeof(flow_t), {
    "src": _off(&_p_flow, &_p_flow.src), "dst": _off(&_p_flow, &_p_flow.dst),
    "sport": _off(&_p_flow, &_p_flow.sport), "dport": _off(&_p_flow, &_p_flow.dport),
    "proto": _off(&_p_flow, &_p_flow.proto), "tcp_flags": _off(&_p_flow, &_p_flow.tcp_flags),
    "local": _off(&_p_flow, &_p_flow.local), "checksum_ok": _off(&_p_flow, &_p_flow.checksum_ok),
    "now": _off(&_p_flow, &_p_flow.now),
}, {
    "src": sizeof(_p_flow.src), "sport": sizeof(_p_flow.sport), "proto": sizeof(_p_flow.proto),
    "now": sizeof(_p_flow.now),
})
CT_RESULT_STRUCT = (sizeof(ct_result_t), {
    "handle": _off(&_p_res, &_p_res.handle), "id": _off(&_p_res, &_p_res.id),
    "status": _off(&_p_res, &_p_res.status), "ctinfo": _off(&_p_res, &_p_res.ctinfo),
    "direction": _off(&_p_res, &_p_res.direction), "new": _off(&_p_res, &_p_res.new),
    "code": _off(&_p_res, &_p_res.code), "state": _off(&_p_res, &_p_res.state),
}, {
    "handle": sizeof(_p_res.handle), "id": sizeof(_p_res.id), "status": sizeof(_p_res.status),
    "ctinfo": sizeof(_p_res.ctinfo), "code": sizeof(_p_res.code),
})

cdef m_rule_t _p_rule
cdef m_sp_t _p_sp
cdef m_ep_t _p_ep
cdef m_cidr_t _p_cidr
cdef decision_t _p_dec

MATCH_RULE_STRUCT = (sizeof(m_rule_t), {
    "next": _off(&_p_rule, &_p_rule.next), "pos": _off(&_p_rule, &_p_rule.pos),
    "sp": _off(&_p_rule, &_p_rule.sp), "kind": _off(&_p_rule, &_p_rule.kind),
    "flag": _off(&_p_rule, &_p_rule.flag)}, None)
MATCH_SP_STRUCT = (sizeof(m_sp_t), {
    "cip": _off(&_p_sp, &_p_sp.cip), "port": _off(&_p_sp, &_p_sp.port),
    "proto": _off(&_p_sp, &_p_sp.proto), "internal_local": _off(&_p_sp, &_p_sp.internal_local),
    "ext_local": _off(&_p_sp, &_p_sp.ext_local), "has_external": _off(&_p_sp, &_p_sp.has_external),
    "affinity": _off(&_p_sp, &_p_sp.affinity), "svc_masq": _off(&_p_sp, &_p_sp.svc_masq),
    "svl_masq": _off(&_p_sp, &_p_sp.svl_masq), "ext_pod_rule": _off(&_p_sp, &_p_sp.ext_pod_rule),
    "pad": _off(&_p_sp, &_p_sp.pad[0]),
    "affinity_seconds": _off(&_p_sp, &_p_sp.affinity_seconds),
    "svc_off": _off(&_p_sp, &_p_sp.svc_off), "svc_n": _off(&_p_sp, &_p_sp.svc_n),
    "svl_off": _off(&_p_sp, &_p_sp.svl_off), "svl_n": _off(&_p_sp, &_p_sp.svl_n),
    "fw_off": _off(&_p_sp, &_p_sp.fw_off), "fw_n": _off(&_p_sp, &_p_sp.fw_n)}, None)
MATCH_EP_STRUCT = (sizeof(m_ep_t), {
    "point": _off(&_p_ep, &_p_ep.point), "ip": _off(&_p_ep, &_p_ep.ip),
    "prob": _off(&_p_ep, &_p_ep.prob), "table": _off(&_p_ep, &_p_ep.table),
    "port": _off(&_p_ep, &_p_ep.port), "filter": _off(&_p_ep, &_p_ep.filter)}, None)
MATCH_CIDR_STRUCT = (sizeof(m_cidr_t), {"net": _off(&_p_cidr, &_p_cidr.net),
                                        "mask": _off(&_p_cidr, &_p_cidr.mask)}, None)
DECISION_STRUCT = (sizeof(decision_t), {
    "ep_ip": _off(&_p_dec, &_p_dec.ep_ip), "ep_port": _off(&_p_dec, &_p_dec.ep_port),
    "verdict": _off(&_p_dec, &_p_dec.verdict), "masquerade": _off(&_p_dec, &_p_dec.masquerade),
    "service": _off(&_p_dec, &_p_dec.service), "rules": _off(&_p_dec, &_p_dec.rules)}, None)

# The result codes kdp.fast.contract names (CT_OK, CT_INVALID, CT_DROP, CT_MISS).
CT_CODES = (CT_OK_, CT_INVALID_, CT_DROP_, CT_MISS_)
