"""Sans-IO DICOM Upper Layer (PS3.8): PDU codec, receive buffer, state machine."""
