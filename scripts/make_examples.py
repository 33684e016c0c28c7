"""Generate the embedded default's data in examples/ (deterministic, seeded).

    python scripts/make_examples.py            # writes examples/products.json, products.labels.jsonl,
                                               # general/train.jsonl, general/test.jsonl

Products: ~400 Amazon product records in the shape of a Bright Data snapshot download
(gd_l7q7dkf244hwjntr0, see shared/contracts/brightdata.md section 7), made from a small grammar so
that each description follows from its title, brand and feature bullets. Planted on purpose, and
listed in products.labels.jsonl: exact duplicates, near duplicates, malformed records and Bright Data
error records.

General chat set: the handwritten pairs in examples/general/handwritten.txt plus templated pairs
(arithmetic, unit conversions, capitals, antonyms), split into train and test.
"""

from __future__ import annotations

import json
import random
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import ftfy

SEED = 20260202
EXAMPLES = Path(__file__).resolve().parent.parent / "src/webtune/examples"

N_CLEAN = 366
N_EXACT_DUPLICATES = 12
N_NEAR_DUPLICATES = 12
NEAR_DUPLICATE_MIN_JACCARD = 0.84  # the brief asks >= 0.8; the margin keeps MinHash estimates above 0.8
DISTINCT_MAX_JACCARD = 0.5  # clean records must not look like near duplicates of one another
N_GENERAL_TEST = 60

# --------------------------------------------------------------------------------------------------
# Product grammar. Each category: Amazon category path, brands, nouns with the materials that make
# sense for them, feature verb phrases (bullet label, phrase), opening benefits, uses, durability.
# The description reuses the bullets' phrases, so a model can learn to write it from the record.
# --------------------------------------------------------------------------------------------------

ALL = "*"  # a feature that fits every noun of its category

CATEGORIES: dict[str, dict] = {
    "kitchen": {
        "path": ["Home & Kitchen", "Kitchen & Dining"],
        "brands": ["Harbor Lane", "Copperleaf", "Northfield Kitchen", "Mesa & Oak"],
        "nouns": {
            "french press": ["stainless steel", "borosilicate glass"],
            "chef's knife": ["high-carbon steel", "Damascus steel"],
            "cutting board": ["bamboo", "acacia wood"],
            "mixing bowl set": ["stainless steel", "tempered glass"],
            "pour-over coffee maker": ["borosilicate glass", "ceramic"],
            "salad spinner": ["BPA-free plastic", "stainless steel"],
            "skillet": ["cast iron", "tri-ply stainless steel"],
            "spice rack": ["bamboo", "powder-coated steel"],
        },
        "features": [
            ("DISHWASHER SAFE", "cleans up in seconds because every part is dishwasher safe",
             "french press|mixing bowl set|pour-over coffee maker|salad spinner"),
            ("NON-SLIP BASE", "stays put on the counter thanks to a non-slip base",
             "cutting board|mixing bowl set|salad spinner|spice rack"),
            ("ERGONOMIC GRIP", "feels balanced in the hand with an ergonomic grip", "chef's knife|skillet|salad spinner"),
            ("SPACE SAVING", "tucks neatly into a small cupboard when you are done", ALL),
            ("FOOD SAFE", "is made only from food-safe materials with no coatings to flake off", ALL),
            ("HEAT RESISTANT", "handles high heat without warping or cracking",
             "french press|pour-over coffee maker|skillet|mixing bowl set"),
            ("EASY TO USE", "works right out of the box with no assembly", ALL),
            ("MEASURING MARKS", "shows clear measuring marks so you can skip the extra cups",
             "french press|pour-over coffee maker|mixing bowl set"),
            ("RAZOR SHARP", "glides through tomatoes, herbs and crusty bread", "chef's knife"),
            ("JUICE GROOVE", "catches juices in a deep groove around the edge", "cutting board"),
        ],
        "benefits": ["makes everyday cooking simpler", "brings a little joy to weeknight meals",
                     "turns your kitchen into a calmer place to cook", "helps you cook like a pro at home"],
        "uses": ["busy weeknight dinners", "weekend brunch", "holiday baking", "meal prep on Sundays",
                 "small apartment kitchens", "cooking with the kids"],
        "durability": ["handle years of daily cooking", "keep its good looks meal after meal"],
        "price": (14, 89),
    },
    "office": {
        "path": ["Office Products", "Office & School Supplies"],
        "brands": ["Paperwell", "Inkstone", "Deskcraft", "Ledger & Line"],
        "nouns": {
            "desk organizer": ["bamboo", "powder-coated steel"],
            "monitor stand": ["walnut wood", "aluminum"],
            "notebook": ["recycled paper", "vegan leather"],
            "gel pen set": ["recycled plastic", "aluminum"],
            "document tray": ["mesh steel", "clear acrylic"],
            "desk lamp": ["aluminum", "matte steel"],
            "whiteboard": ["tempered glass", "magnetic steel"],
        },
        "features": [
            ("TIDY DESK", "keeps pens, notes and cables in one tidy place", "desk organizer|document tray|monitor stand"),
            ("STURDY BUILD", "stays steady on the desk with a weighted, sturdy build",
             "monitor stand|desk lamp|document tray|desk organizer"),
            ("SMOOTH WRITING", "writes smoothly without smudging or skipping", "gel pen set|whiteboard"),
            ("ERGONOMIC HEIGHT", "lifts your screen to a more comfortable height", "monitor stand"),
            ("EASY ASSEMBLY", "goes together in minutes with no tools needed",
             "desk organizer|monitor stand|document tray|whiteboard|desk lamp"),
            ("COMPACT SIZE", "fits on even the smallest desk",
             "desk organizer|notebook|gel pen set|document tray|desk lamp"),
            ("STACKABLE DESIGN", "stacks neatly so you can grow your setup over time", "document tray|desk organizer"),
            ("ECO FRIENDLY", "uses recycled materials wherever possible", ALL),
            ("LAY FLAT", "lies flat on the desk so you can write right to the edge", "notebook"),
            ("THICK PAPER", "has thick pages that stop ink from bleeding through", "notebook"),
            ("ADJUSTABLE ARM", "bends and turns to put light exactly where you need it", "desk lamp"),
            ("VIVID COLOURS", "comes in 24 vivid colours for notes and sketches", "gel pen set"),
        ],
        "benefits": ["brings calm order to a busy desk", "helps you focus on the work that matters",
                     "makes a home office feel like a real workspace", "turns a cluttered desk into a clear one"],
        "uses": ["home offices", "college dorm rooms", "long study sessions", "shared workspaces",
                 "remote work days", "planning the week ahead"],
        "durability": ["stand up to years of daily use", "look sharp on any desk for years"],
        "price": (9, 79),
    },
    "outdoor": {
        "path": ["Sports & Outdoors", "Outdoor Recreation", "Camping & Hiking"],
        "brands": ["Trailmark", "Ridgeback Outfitters", "Pine & Ember", "Summit Fox"],
        "nouns": {
            "camping lantern": ["aluminum", "ABS plastic"],
            "hiking backpack": ["ripstop nylon", "recycled polyester"],
            "sleeping bag": ["ripstop nylon", "brushed polyester"],
            "camping chair": ["aluminum", "steel"],
            "water bottle": ["stainless steel", "BPA-free Tritan"],
            "camp stove": ["stainless steel", "aluminum"],
            "hammock": ["parachute nylon", "cotton rope"],
        },
        "features": [
            ("ULTRALIGHT", "weighs less than you expect so it never slows you down on the trail", ALL),
            ("WEATHER RESISTANT", "shrugs off rain, wind and dust",
             "camping lantern|hiking backpack|sleeping bag|hammock|camping chair"),
            ("PACKS SMALL", "folds down small enough to fit in any pack",
             "sleeping bag|camping chair|hammock|camp stove|camping lantern"),
            ("QUICK SETUP", "sets up in under a minute", "camping chair|hammock|camp stove"),
            ("INSULATED", "keeps drinks cold for 24 hours or hot for 12", "water bottle"),
            ("LEAK PROOF", "has a leak-proof lid you can toss in any bag", "water bottle"),
            ("RUGGED BUILD", "survives drops, bumps and muddy trails",
             "camping lantern|water bottle|camp stove|camping chair|hiking backpack"),
            ("CARRY STRAP", "comes with a padded carry strap for easy hauling",
             "camping chair|camping lantern|water bottle|sleeping bag|hammock"),
            ("LONG RUNTIME", "runs for up to 40 hours on a single charge", "camping lantern"),
            ("PADDED STRAPS", "spreads the load with padded shoulder straps", "hiking backpack"),
            ("WARM AND COSY", "keeps you warm on nights down to freezing", "sleeping bag"),
            ("FAST BOIL", "boils a litre of water in about three minutes", "camp stove"),
        ],
        "benefits": ["makes every camping trip a little more comfortable",
                     "is built for long days outdoors", "keeps up with you from trailhead to summit",
                     "helps you spend more time outside"],
        "uses": ["weekend camping trips", "long day hikes", "backyard campouts", "music festivals",
                 "fishing trips", "road trips to the coast"],
        "durability": ["handle rough weather season after season", "take on years of adventures"],
        "price": (15, 149),
    },
    "audio": {
        "path": ["Electronics", "Headphones, Earbuds & Accessories"],
        "brands": ["Soundhaven", "Echo Ridge", "Lumatone", "Wavecrest Audio"],
        "nouns": {
            "wireless earbud set": ["matte polycarbonate", "soft-touch plastic"],
            "over-ear headset": ["aluminum", "protein leather"],
            "bluetooth speaker": ["woven fabric", "rubberized aluminum"],
            "soundbar": ["brushed aluminum", "acoustic fabric"],
            "turntable": ["walnut veneer", "solid oak"],
            "clip-on microphone": ["metal", "ABS plastic"],
        },
        "features": [
            ("RICH BASS", "delivers deep bass and clear highs at any volume",
             "wireless earbud set|over-ear headset|bluetooth speaker|soundbar"),
            ("LONG BATTERY", "plays for up to 30 hours between charges",
             "wireless earbud set|over-ear headset|bluetooth speaker"),
            ("NOISE CANCELLING", "blocks out background noise so you can focus",
             "wireless earbud set|over-ear headset|clip-on microphone"),
            ("FAST PAIRING", "pairs with your phone in seconds",
             "wireless earbud set|over-ear headset|bluetooth speaker|soundbar"),
            ("WATER RESISTANT", "is water resistant, so rain and sweat are no problem",
             "wireless earbud set|bluetooth speaker"),
            ("CLEAR CALLS", "picks up your voice clearly on calls",
             "wireless earbud set|over-ear headset|clip-on microphone|bluetooth speaker"),
            ("USB-C CHARGING", "charges quickly over USB-C",
             "wireless earbud set|over-ear headset|bluetooth speaker|clip-on microphone"),
            ("COMFORT FIT", "stays comfortable through hours of listening", "wireless earbud set|over-ear headset"),
            ("BUILT-IN PREAMP", "connects straight to powered speakers with a built-in preamp", "turntable"),
            ("BELT DRIVE", "spins quietly and steadily thanks to a belt drive", "turntable"),
            ("AUTO STOP", "stops automatically at the end of a record", "turntable"),
            ("EASY MOUNTING", "mounts under your TV in minutes", "soundbar"),
            ("DIALOGUE MODE", "makes voices clearer in films and shows", "soundbar"),
            ("SECURE CLIP", "clips securely to a collar or lapel", "clip-on microphone"),
        ],
        "benefits": ["fills any room with clear, balanced sound", "makes your music sound the way it should",
                     "brings studio-quality sound to everyday listening", "keeps your favourite songs close"],
        "uses": ["daily commutes", "quiet evenings at home", "movie nights", "video calls",
                 "long flights", "parties in the backyard"],
        "durability": ["hold up to daily listening for years", "survive life in a busy household"],
        "price": (19, 199),
    },
    "home": {
        "path": ["Home & Kitchen", "Home Décor Products"],
        "brands": ["Willow & Wren", "Hearthstone Home", "Linden House", "Quietnest"],
        "nouns": {
            "throw blanket": ["cotton", "chunky knit acrylic"],
            "wall mirror": ["brass-finished metal", "solid wood"],
            "table vase": ["ceramic", "hand-blown glass"],
            "throw pillow cover": ["linen", "velvet"],
            "scented candle": ["soy wax", "coconut wax"],
            "picture frame set": ["solid wood", "metal"],
            "storage basket": ["seagrass", "cotton rope"],
        },
        "features": [
            ("SOFT TOUCH", "feels soft and cosy from the very first use", "throw blanket|throw pillow cover"),
            ("HANDMADE", "is made by hand, so every piece is slightly unique",
             "table vase|storage basket|throw blanket|scented candle"),
            ("EASY CARE", "is machine washable for easy care", "throw blanket|throw pillow cover"),
            ("READY TO HANG", "arrives ready to hang with all hardware included", "wall mirror|picture frame set"),
            ("CLEAN BURN", "burns cleanly for up to 50 hours", "scented candle"),
            ("NEUTRAL TONES", "blends with any decor thanks to its neutral tones", ALL),
            ("GIFT READY", "arrives in a gift-ready box", "scented candle|table vase|picture frame set|throw blanket"),
            ("SUSTAINABLE", "is made from natural, sustainably sourced materials",
             "storage basket|scented candle|throw blanket|throw pillow cover|table vase"),
            ("HIDDEN ZIPPER", "closes with a hidden zipper for a clean look", "throw pillow cover"),
            ("STURDY HANDLES", "has sturdy handles for carrying", "storage basket"),
            ("CLEAR REFLECTION", "gives a clear, distortion-free reflection", "wall mirror"),
            ("MATS INCLUDED", "includes mats so small prints look gallery-ready", "picture frame set"),
            ("WATERTIGHT", "holds water for fresh flowers and looks just as good empty", "table vase"),
        ],
        "benefits": ["adds warmth and texture to any room", "makes your home feel finished",
                     "brings a calm, natural look to your living space", "turns a bare corner into a cosy one"],
        "uses": ["living rooms", "bedrooms", "entryways", "housewarming gifts", "reading nooks",
                 "guest rooms"],
        "durability": ["stay beautiful for years", "keep its shape and colour for years"],
        "price": (12, 95),
    },
    "bath": {
        "path": ["Home & Kitchen", "Bath"],
        "brands": ["Tidewater Bath", "Clearspring", "Aurora Linen", "Stillwater"],
        "nouns": {
            "bath towel set": ["Turkish cotton", "bamboo viscose"],
            "shower caddy": ["stainless steel", "rust-proof aluminum"],
            "bath mat": ["memory foam", "diatomite stone"],
            "soap dispenser": ["ceramic", "frosted glass"],
            "shower curtain": ["waffle-weave polyester", "linen blend"],
            "bathrobe": ["plush cotton", "waffle cotton"],
        },
        "features": [
            ("ULTRA ABSORBENT", "soaks up water quickly and dries fast", "bath towel set|bath mat|bathrobe"),
            ("RUST PROOF", "never rusts, even in a steamy bathroom", "shower caddy|soap dispenser"),
            ("QUICK DRYING", "dries quickly between uses to stay fresh",
             "bath towel set|bath mat|bathrobe|shower curtain"),
            ("NON-SLIP BACKING", "grips the floor with a non-slip backing", "bath mat"),
            ("EASY INSTALL", "installs in minutes without drilling", "shower caddy|shower curtain"),
            ("SOFT AND PLUSH", "feels soft and plush against the skin", "bath towel set|bathrobe"),
            ("MOLD RESISTANT", "resists mold and mildew", "shower curtain|bath mat|shower caddy"),
            ("MACHINE WASHABLE", "goes straight into the washing machine", "bath towel set|bathrobe|shower curtain"),
            ("EASY PUMP", "dispenses just the right amount with every press", "soap dispenser"),
            ("REFILLABLE", "refills easily through a wide opening", "soap dispenser"),
            ("TIMELESS STYLE", "suits any bathroom style", ALL),
        ],
        "benefits": ["turns your bathroom into a small spa", "makes every shower feel like a treat",
                     "brings hotel comfort to your home", "keeps your bathroom fresh and organised"],
        "uses": ["family bathrooms", "guest bathrooms", "small apartments", "relaxing weekend baths",
                 "kids' bath time", "holiday rentals"],
        "durability": ["stay fresh through years of use", "last through years of steamy showers"],
        "price": (11, 79),
    },
    "garden": {
        "path": ["Patio, Lawn & Garden", "Gardening & Lawn Care"],
        "brands": ["Greenhaven", "Fernwood Garden", "Meadowlark", "Rootstock"],
        "nouns": {
            "garden hose": ["flexible latex", "reinforced rubber"],
            "bypass pruner": ["carbon steel", "stainless steel"],
            "raised garden bed": ["galvanized steel", "cedar wood"],
            "watering can": ["galvanized steel", "recycled plastic"],
            "planter set": ["ceramic", "terracotta"],
            "kneeling pad": ["thick foam", "EVA foam"],
            "garden tool set": ["stainless steel", "aluminum"],
        },
        "features": [
            ("SHARP BLADES", "cuts cleanly through stems and branches", "bypass pruner|garden tool set"),
            ("KINK FREE", "never kinks or tangles", "garden hose"),
            ("DRAINAGE HOLES", "has drainage holes to keep roots healthy", "planter set|raised garden bed"),
            ("WEATHERPROOF", "stays outside all year without fading or rusting", ALL),
            ("COMFORT HANDLES", "has cushioned handles that are easy on your hands",
             "bypass pruner|garden tool set|watering can"),
            ("LIGHTWEIGHT", "is light enough to carry around the whole garden",
             "garden hose|watering can|kneeling pad|garden tool set|planter set"),
            ("EASY STORAGE", "hangs on a hook for easy storage",
             "garden hose|bypass pruner|garden tool set|watering can|kneeling pad"),
            ("DEEP SOIL", "holds deep soil for strong roots", "raised garden bed|planter set"),
            ("GENTLE SPRAY", "gives seedlings a gentle, even shower", "watering can|garden hose"),
            ("EXTRA CUSHION", "protects your knees on hard ground", "kneeling pad"),
            ("TOOL-FREE ASSEMBLY", "goes together in minutes with no tools", "raised garden bed"),
        ],
        "benefits": ["makes garden work easier and more fun", "helps your plants grow strong and healthy",
                     "brings order to your garden shed", "turns a small balcony into a green retreat"],
        "uses": ["vegetable gardens", "balcony gardens", "flower beds", "herb gardens",
                 "spring planting", "weekend yard work"],
        "durability": ["stand up to many seasons outdoors", "handle years of digging and planting"],
        "price": (10, 120),
    },
    "fitness": {
        "path": ["Sports & Outdoors", "Exercise & Fitness"],
        "brands": ["Corestrong", "Pulseline", "Iron Meadow", "Flexora"],
        "nouns": {
            "yoga mat": ["natural rubber", "TPE foam"],
            "adjustable dumbbell": ["cast iron", "steel"],
            "resistance band set": ["natural latex", "fabric"],
            "jump rope": ["steel cable", "PVC"],
            "foam roller": ["high-density EVA", "textured EVA"],
            "kettlebell": ["cast iron", "vinyl-coated iron"],
        },
        "features": [
            ("NON-SLIP GRIP", "grips firmly even when you sweat", "yoga mat|adjustable dumbbell|kettlebell|jump rope"),
            ("EXTRA THICK", "cushions your joints with extra thickness", "yoga mat"),
            ("ADJUSTABLE", "adjusts in seconds to match your level", "adjustable dumbbell|resistance band set|jump rope"),
            ("PORTABLE", "packs into a small bag so you can train anywhere",
             "resistance band set|jump rope|yoga mat|foam roller"),
            ("QUIET USE", "stays quiet, so it will not disturb the neighbours", "adjustable dumbbell|kettlebell|yoga mat"),
            ("FREE GUIDE", "comes with a printed guide of simple exercises", ALL),
            ("DURABLE BUILD", "holds up to daily, intense workouts", ALL),
            ("EASY CLEAN", "wipes clean with a damp cloth", "yoga mat|foam roller|kettlebell|adjustable dumbbell"),
            ("DEEP MASSAGE", "works out knots and tight muscles after a workout", "foam roller"),
            ("TANGLE FREE", "spins smoothly without tangling", "jump rope"),
        ],
        "benefits": ["makes working out at home easy", "helps you build strength at your own pace",
                     "brings the gym into your living room", "keeps your training routine on track"],
        "uses": ["home workouts", "yoga classes", "stretching after a run", "travel workouts",
                 "physical therapy", "small apartments"],
        "durability": ["handle thousands of workouts", "keep its shape through years of training"],
        "price": (12, 139),
    },
    "pets": {
        "path": ["Pet Supplies"],
        "brands": ["Happy Paws", "Barkwell", "Whisker & Tail", "Good Boy Goods"],
        "nouns": {
            "dog bed": ["memory foam", "orthopedic foam"],
            "cat scratching post": ["sisal rope", "cardboard"],
            "pet water fountain": ["stainless steel", "BPA-free plastic"],
            "dog leash": ["reflective nylon", "rope"],
            "pet grooming brush": ["stainless steel", "bamboo"],
            "slow feeder bowl": ["food-grade silicone", "melamine"],
        },
        "features": [
            ("CHEW RESISTANT", "stands up to curious chewers", "dog bed|dog leash|slow feeder bowl"),
            ("WASHABLE COVER", "has a removable cover that goes in the washing machine", "dog bed"),
            ("NON-SKID BOTTOM", "stays in place with a non-skid bottom",
             "slow feeder bowl|pet water fountain|dog bed|cat scratching post"),
            ("FILTERED WATER", "keeps water fresh with a replaceable filter", "pet water fountain"),
            ("QUIET PUMP", "runs with a whisper-quiet pump", "pet water fountain"),
            ("REFLECTIVE STITCHING", "keeps your pet visible on night walks", "dog leash"),
            ("PADDED HANDLE", "has a padded handle that is easy on your hands", "dog leash"),
            ("GENTLE BRISTLES", "is gentle on sensitive skin", "pet grooming brush"),
            ("SELF CLEANING", "releases collected hair at the push of a button", "pet grooming brush"),
            ("SLOWS EATING", "slows down fast eaters for better digestion", "slow feeder bowl"),
            ("DISHWASHER SAFE", "goes straight into the dishwasher", "slow feeder bowl|pet water fountain"),
            ("STURDY BASE", "stands firm on a wide, heavy base", "cat scratching post"),
            ("SAVES FURNITURE", "gives cats a place to scratch that is not your sofa", "cat scratching post"),
            ("VET APPROVED", "was designed with help from veterinarians", ALL),
        ],
        "benefits": ["keeps your pet happy and comfortable", "makes caring for your pet easier",
                     "gives your best friend a little extra comfort", "helps your pet feel at home"],
        "uses": ["new pet owners", "pets of every age", "small apartments", "daily routines",
                 "multi-pet homes", "busy households"],
        "durability": ["last through years of play", "stand up to daily use by busy pets"],
        "price": (9, 89),
    },
    "baby": {
        "path": ["Baby Products", "Nursery"],
        "brands": ["Little Sprout", "Moonbeam Baby", "Tiny Harbor", "Cuddlenest"],
        "nouns": {
            "swaddle blanket set": ["organic cotton", "muslin cotton"],
            "baby bottle set": ["borosilicate glass", "BPA-free plastic"],
            "play mat": ["non-toxic foam", "padded cotton"],
            "diaper caddy": ["felt", "canvas"],
            "teething toy": ["food-grade silicone", "natural rubber"],
            "night light": ["silicone", "BPA-free plastic"],
        },
        "features": [
            ("BREATHABLE", "is breathable to keep your baby cool and comfortable", "swaddle blanket set"),
            ("NON-TOXIC", "is free from BPA, phthalates and other harmful chemicals", ALL),
            ("EASY TO CLEAN", "cleans up easily in the sink or dishwasher", "baby bottle set|teething toy"),
            ("SOFT GLOW", "gives a soft, warm glow that will not wake your baby", "night light"),
            ("AUTO TIMER", "turns itself off after an hour", "night light"),
            ("SOOTHING", "soothes sore gums during teething", "teething toy"),
            ("PORTABLE", "travels easily to grandma's house", "diaper caddy|night light|play mat|teething toy"),
            ("GENTLE ON SKIN", "feels gentle on delicate skin", "swaddle blanket set|play mat"),
            ("ANTI-COLIC", "uses an anti-colic vent to reduce fussing", "baby bottle set"),
            ("EASY GRIP", "has an easy-grip shape for small hands", "teething toy|baby bottle set"),
            ("MANY POCKETS", "keeps diapers, wipes and creams sorted in separate pockets", "diaper caddy"),
            ("STURDY HANDLE", "carries easily from room to room by its sturdy handle", "diaper caddy"),
            ("GROWS WITH BABY", "doubles as a light blanket once your baby outgrows swaddling", "swaddle blanket set"),
            ("WIPE CLEAN", "wipes clean after messy play", "play mat"),
        ],
        "benefits": ["makes the first year a little easier", "helps new parents feel prepared",
                     "keeps your little one safe and comfortable", "brings calm to busy nights"],
        "uses": ["newborns", "baby showers", "night feeds", "nap time", "travel with a baby",
                 "growing toddlers"],
        "durability": ["grow with your child through the early years", "hold up to years of daily use"],
        "price": (10, 69),
    },
    "tools": {
        "path": ["Tools & Home Improvement", "Power & Hand Tools"],
        "brands": ["Boltcraft", "Ironfield Tools", "Sturdyline", "Keystone Works"],
        "nouns": {
            "cordless drill": ["impact-resistant plastic", "aluminum"],
            "screwdriver set": ["chrome vanadium steel", "S2 steel"],
            "tape measure": ["steel", "rubber-coated steel"],
            "tool box": ["heavy-duty plastic", "steel"],
            "work light": ["aluminum", "ABS plastic"],
            "stud finder": ["ABS plastic", "rubberized plastic"],
        },
        "features": [
            ("HIGH TORQUE", "delivers plenty of torque for tough jobs", "cordless drill"),
            ("MAGNETIC TIPS", "holds screws in place with magnetic tips", "screwdriver set|cordless drill"),
            ("BRIGHT LED", "lights up dark corners with a built-in LED", "cordless drill|work light"),
            ("LONG LASTING BATTERY", "runs for hours on one battery", "cordless drill|work light|stud finder"),
            ("CARRYING CASE", "comes in a sturdy carrying case", "cordless drill|screwdriver set"),
            ("ACCURATE READINGS", "gives fast, accurate readings", "tape measure|stud finder"),
            ("SOFT GRIP", "has a soft grip that reduces hand fatigue",
             "cordless drill|screwdriver set|tape measure|stud finder"),
            ("DROP TESTED", "is drop tested to survive a fall from a ladder", ALL),
            ("AUTO LOCK", "locks the blade in place until you release it", "tape measure"),
            ("REMOVABLE TRAY", "has a removable tray for small parts", "tool box"),
            ("SECURE LATCHES", "closes tight with metal latches", "tool box"),
            ("MAGNETIC BASE", "sticks to any metal surface with a magnetic base", "work light"),
        ],
        "benefits": ["makes home repairs quick and simple", "belongs in every toolbox",
                     "helps you finish projects faster", "gives weekend projects a professional finish"],
        "uses": ["home repairs", "furniture assembly", "DIY projects", "garage workshops",
                 "hanging pictures and shelves", "first apartments"],
        "durability": ["handle years of tough jobs", "stay reliable project after project"],
        "price": (12, 159),
    },
    "travel": {
        "path": ["Clothing, Shoes & Jewelry", "Luggage & Travel Gear"],
        "brands": ["Wanderlight", "Jetstream Goods", "Compass & Co", "Nomad Trail"],
        "nouns": {
            "carry-on suitcase": ["polycarbonate", "ballistic nylon"],
            "packing cube set": ["ripstop nylon", "recycled polyester"],
            "travel pillow": ["memory foam", "microbead fabric"],
            "toiletry bag": ["water-resistant nylon", "canvas"],
            "passport wallet": ["full-grain leather", "vegan leather"],
            "weekender bag": ["waxed canvas", "leather"],
        },
        "features": [
            ("TSA FRIENDLY", "passes through airport security with ease", "carry-on suitcase|toiletry bag"),
            ("EXPANDABLE", "expands to give you extra room on the way home", "carry-on suitcase|weekender bag"),
            ("SPINNER WHEELS", "glides smoothly on four spinner wheels", "carry-on suitcase"),
            ("RFID BLOCKING", "protects your cards with RFID blocking", "passport wallet"),
            ("WATER RESISTANT", "keeps your things dry in light rain",
             "toiletry bag|weekender bag|packing cube set|passport wallet|carry-on suitcase"),
            ("MANY POCKETS", "has plenty of pockets to keep things organised",
             "toiletry bag|weekender bag|passport wallet"),
            ("LIGHTWEIGHT", "is light enough to carry all day",
             "carry-on suitcase|weekender bag|packing cube set|travel pillow"),
            ("COMPRESSIBLE", "compresses your clothes to save space", "packing cube set"),
            ("COLOUR CODED", "comes in colour-coded sizes so you find things fast", "packing cube set"),
            ("NECK SUPPORT", "supports your neck so you can actually sleep on the plane", "travel pillow"),
            ("WASHABLE COVER", "has a removable, washable cover", "travel pillow"),
            ("SLIM DESIGN", "slips easily into a jacket pocket", "passport wallet"),
            ("HANGING HOOK", "hangs from a hook so everything is within reach", "toiletry bag"),
            ("SHOE COMPARTMENT", "keeps shoes apart in their own compartment", "weekender bag"),
        ],
        "benefits": ["makes packing quick and stress-free", "keeps you organised from gate to gate",
                     "makes long journeys more comfortable", "is ready for your next adventure"],
        "uses": ["business trips", "weekend getaways", "long-haul flights", "family holidays",
                 "backpacking trips", "road trips"],
        "durability": ["handle years of travel", "survive busy airports trip after trip"],
        "price": (15, 189),
    },
    "toys": {
        "path": ["Toys & Games", "Learning & Education"],
        "brands": ["Brightblock", "Puzzle Grove", "Tumbletown", "Wonderkit"],
        "nouns": {
            "building block set": ["ABS plastic", "solid wood"],
            "jigsaw puzzle": ["recycled cardboard", "wood"],
            "board game": ["cardboard", "wood"],
            "science kit": ["plastic", "glass"],
            "wooden train set": ["beech wood", "pine wood"],
            "art supply kit": ["wood", "canvas"],
        },
        "features": [
            ("STEM LEARNING", "teaches early science and engineering through play",
             "building block set|science kit|wooden train set"),
            ("SAFE MATERIALS", "is made from child-safe, non-toxic materials", ALL),
            ("HOURS OF FUN", "keeps kids busy for hours", ALL),
            ("FAMILY GAME", "brings the whole family around the table", "board game|jigsaw puzzle"),
            ("EASY STORAGE", "packs away into its own storage box",
             "building block set|wooden train set|art supply kit|science kit"),
            ("GREAT GIFT", "makes a great birthday or holiday gift", ALL),
            ("SCREEN FREE", "gives kids a screen-free way to play", ALL),
            ("BUILDS SKILLS", "builds fine motor skills and creativity",
             "building block set|jigsaw puzzle|art supply kit|wooden train set"),
        ],
        "benefits": ["makes learning feel like play", "sparks imagination in young minds",
                     "turns a rainy day into an adventure", "brings families together for game night"],
        "uses": ["rainy afternoons", "family game night", "classrooms", "birthday parties",
                 "long car rides", "curious kids aged 5 and up"],
        "durability": ["survive years of play", "be passed down to younger siblings"],
        "price": (9, 59),
    },
    "computer": {
        "path": ["Electronics", "Computers & Accessories"],
        "brands": ["Keyforge", "Pixelport", "Nimbus Tech", "Cobalt Labs"],
        "nouns": {
            "mechanical keyboard": ["aluminum", "ABS plastic"],
            "wireless mouse": ["matte plastic", "soft-touch plastic"],
            "USB-C hub": ["aluminum", "braided nylon"],
            "laptop stand": ["aluminum", "bamboo"],
            "webcam": ["plastic", "aluminum"],
            "portable SSD": ["aluminum", "rubber-armored plastic"],
        },
        "features": [
            ("PLUG AND PLAY", "works as soon as you plug it in, no drivers needed",
             "mechanical keyboard|wireless mouse|USB-C hub|webcam|portable SSD"),
            ("FAST TRANSFER", "moves large files in seconds", "portable SSD|USB-C hub"),
            ("QUIET CLICKS", "clicks quietly so it will not disturb others", "wireless mouse"),
            ("MULTI-DEVICE", "switches between three devices at the press of a button",
             "mechanical keyboard|wireless mouse"),
            ("FULL HD VIDEO", "records sharp full HD video", "webcam"),
            ("PRIVACY COVER", "has a built-in privacy cover", "webcam"),
            ("COOLING DESIGN", "keeps your laptop cool with an open design", "laptop stand"),
            ("ADJUSTABLE HEIGHT", "adjusts to six heights for a comfortable view", "laptop stand"),
            ("FOLDS FLAT", "folds flat to slide into your laptop bag", "laptop stand"),
            ("BACKLIT KEYS", "lights up the keys for late-night work", "mechanical keyboard"),
            ("MANY PORTS", "adds HDMI, USB and SD card ports in one small hub", "USB-C hub"),
            ("ERGONOMIC SHAPE", "fits the natural curve of your hand", "wireless mouse"),
            ("BROAD COMPATIBILITY", "works with Windows, macOS and Linux",
             "mechanical keyboard|wireless mouse|USB-C hub|webcam|portable SSD"),
        ],
        "benefits": ["makes your workspace faster and more comfortable", "upgrades any laptop setup",
                     "helps you get more done every day", "brings desktop comfort to your laptop"],
        "uses": ["home offices", "students", "video calls", "gaming sessions", "content creators",
                 "working on the go"],
        "durability": ["handle years of daily use", "keep working day after day"],
        "price": (14, 149),
    },
    "lighting": {
        "path": ["Tools & Home Improvement", "Lighting & Ceiling Fans"],
        "brands": ["Glowhaus", "Lanternly", "Brightfield", "Solstice Light"],
        "nouns": {
            "floor lamp": ["brushed brass", "matte steel"],
            "string light set": ["copper wire", "weatherproof PVC"],
            "smart bulb set": ["polycarbonate", "glass"],
            "solar path light set": ["stainless steel", "ABS plastic"],
            "bedside lamp": ["ceramic", "wood"],
            "motion sensor light": ["ABS plastic", "aluminum"],
        },
        "features": [
            ("DIMMABLE", "dims smoothly from a bright glow to a soft nightlight",
             "floor lamp|bedside lamp|smart bulb set|string light set"),
            ("ENERGY SAVING", "uses up to 80 percent less energy than old bulbs", ALL),
            ("APP CONTROL", "changes colour and brightness from your phone", "smart bulb set|string light set"),
            ("SOLAR POWERED", "charges in the sun and turns on automatically at dusk", "solar path light set"),
            ("MOTION SENSING", "switches on the moment it senses movement", "motion sensor light"),
            ("WARM WHITE", "gives a warm white light that is easy on the eyes",
             "floor lamp|bedside lamp|string light set|smart bulb set"),
            ("EASY INSTALL", "installs in minutes with no wiring",
             "solar path light set|motion sensor light|string light set"),
            ("WEATHERPROOF", "is weatherproof for year-round outdoor use",
             "string light set|solar path light set|motion sensor light"),
            ("USB PORT", "has a USB port to charge your phone overnight", "bedside lamp"),
            ("STABLE BASE", "stands steady on a weighted base", "floor lamp|bedside lamp"),
        ],
        "benefits": ["sets the perfect mood in any room", "brightens dark corners of your home",
                     "makes evenings at home feel warm and welcoming", "lights your way safely at night"],
        "uses": ["living rooms", "patios and gardens", "reading in bed", "hallways and stairs",
                 "holiday decorating", "outdoor parties"],
        "durability": ["shine for thousands of hours", "last for years indoors and out"],
        "price": (11, 129),
    },
}


def features_for(cat: dict, noun: str) -> list[tuple[str, str]]:
    return [(label, phrase) for label, phrase, nouns in cat["features"] if nouns == ALL or noun in nouns.split("|")]


COLOURS = ["matte black", "brushed silver", "sage green", "navy blue", "charcoal grey", "ivory white",
           "terracotta", "ocean blue", "blush pink", "forest green", "slate grey", "sand beige",
           "burgundy", "sky blue", "walnut brown", "mustard yellow"]

AVAILABILITY = ["In Stock", "In Stock", "In Stock", "Only 3 left in stock - order soon.",
                "Only 1 left in stock - order soon.", "Usually ships within 2 to 3 days."]

OPENERS = [
    "The {brand} {noun} {benefit}.",
    "Meet the {brand} {noun}: it {benefit}.",
    "Designed by {brand}, this {material} {noun} {benefit}.",
]
FEATURE_SENTENCES = [
    "It {f1} and {f2}.",
    "This {noun} {f1}, and it {f2_also}.",
    "Every detail counts: it {f1} and {f2}.",
]
MATERIAL_SENTENCES = [
    "Made from {material} in a {colour} finish, it is built to {durability}.",
    "The {colour} {material} body is built to {durability}.",
]
USE_SENTENCES = [
    "It is ideal for {use1} and {use2}.",
    "Perfect for {use1}, it also works well for {use2}.",
    "Use it for {use1}, {use2} and everything in between.",
]
CLOSING_SENTENCES = [
    "{brand} backs every {noun} with a {years}-year warranty.",
    "Like every {brand} product, it is made to be used every day.",
    "Add the {brand} {noun} to your cart and feel the difference.",
]
FEATURE_EXTRA = "It {f3_also}."

NEAR_DUPLICATE_SENTENCES = [
    "Available in several colours to match your style.",
    "Ships in recyclable, plastic-free packaging.",
    "A thoughtful gift for friends and family.",
]
WORD_SWAPS = {"ideal": "perfect", "perfect": "ideal", "every": "each", "built": "made",
              "works": "fits", "helps": "lets", "makes": "gets", "also": "even", "simpler": "easier"}


def shingles(text: str, n: int = 5) -> set[tuple[str, ...]]:
    """Word n-shingles of lower-cased, whitespace-split text (the measure the tests use too)."""
    words = text.lower().split()
    return {tuple(words[i:i + n]) for i in range(max(1, len(words) - n + 1))}


def jaccard(a: str, b: str) -> float:
    sa, sb = shingles(a), shingles(b)
    return len(sa & sb) / len(sa | sb)


def title_case(phrase: str) -> str:
    return " ".join(w if w.isupper() else w[:1].upper() + w[1:] for w in phrase.split())


def make_asin(rng: random.Random) -> str:
    return "B0" + "".join(rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ0123456789") for _ in range(8))


def check_grammar() -> None:
    """Every noun a feature names exists, and every noun has enough features for a description."""
    for name, cat in CATEGORIES.items():
        for label, _, nouns in cat["features"]:
            unknown = set() if nouns == ALL else set(nouns.split("|")) - set(cat["nouns"])
            if unknown:
                raise ValueError(f"category {name}, feature {label}: unknown nouns {sorted(unknown)}")
        for noun in cat["nouns"]:
            if len(features_for(cat, noun)) < 3:
                raise ValueError(f"category {name}, noun {noun}: needs at least 3 features")


def also(verb_phrase: str) -> str:
    """'is light' -> 'is also light'; 'folds flat' -> 'also folds flat'."""
    for aux in ("is ", "was "):
        if verb_phrase.startswith(aux):
            return aux + "also " + verb_phrase[len(aux):]
    return "also " + verb_phrase


def make_description(rng: random.Random, p: dict) -> str:
    """2-5 sentences, 40-90 words, mentioning the brand and the product noun."""
    f = p["feature_phrases"]
    slots = dict(brand=p["brand"], noun=p["noun"], material=p["material"], colour=p["colour"],
                 benefit=p["benefit"], f1=f[0], f2=f[1], f2_also=also(f[1]), f3_also=also(f[2] if len(f) > 2 else f[0]),
                 durability=p["durability"], use1=p["uses"][0], use2=p["uses"][1], years=p["years"])
    for _ in range(100):
        optional = [rng.choice(MATERIAL_SENTENCES), rng.choice(USE_SENTENCES), rng.choice(CLOSING_SENTENCES)]
        if len(f) > 2:
            optional.append(FEATURE_EXTRA)
        chosen = rng.sample(optional, rng.randint(1, 3))
        order = [rng.choice(OPENERS), rng.choice(FEATURE_SENTENCES)]
        order += sorted(chosen, key=lambda s: [FEATURE_EXTRA, *MATERIAL_SENTENCES, *USE_SENTENCES,
                                                *CLOSING_SENTENCES].index(s))
        text = " ".join(s.format(**slots) for s in order)
        text = text[0].upper() + text[1:]
        if 40 <= len(text.split()) <= 90:
            return text
    raise RuntimeError(f"could not make a 40-90 word description for {p['title']}")


def make_product(rng: random.Random, when: datetime) -> dict:
    """One clean product record in the Bright Data Amazon products shape."""
    cat_name = rng.choice(sorted(CATEGORIES))
    cat = CATEGORIES[cat_name]
    noun = rng.choice(sorted(cat["nouns"]))
    material = rng.choice(cat["nouns"][noun])
    brand = rng.choice(cat["brands"])
    colour = rng.choice(COLOURS)
    fitting = features_for(cat, noun)
    features = rng.sample(fitting, rng.randint(3, min(5, len(fitting))))
    p = dict(brand=brand, noun=noun, material=material, colour=colour, benefit=rng.choice(cat["benefits"]),
             feature_phrases=[phrase for _, phrase in features], durability=rng.choice(cat["durability"]),
             uses=rng.sample(cat["uses"], 2), years=rng.choice([1, 2, 3, 5]))
    title = f"{brand} {title_case(material)} {title_case(noun)}, {title_case(features[0][0].lower())}, {title_case(colour)}"
    p["title"] = title
    asin = make_asin(rng)
    initial = rng.randint(*cat["price"]) + 0.99
    final = round(initial * rng.choice([1, 1, 1, 0.9, 0.85, 0.8]), 2)
    slug = re.sub(r"[^A-Za-z0-9]+", "-", title).strip("-")[:60]
    return {
        "url": f"https://www.amazon.com/{slug}/dp/{asin}",
        "asin": asin,
        "title": title,
        "brand": brand,
        "description": make_description(rng, p),
        "features": [f"{label}: {phrase[0].upper()}{phrase[1:]}." for label, phrase in features],
        "initial_price": initial,
        "final_price": final,
        "currency": "USD",
        "rating": round(rng.uniform(3.6, 4.9), 1),
        "reviews_count": int(rng.lognormvariate(6, 1.3)),
        "categories": [*cat["path"], title_case(noun)],
        "availability": rng.choice(AVAILABILITY),
        "seller_name": rng.choice([brand, f"{brand} Official Store", "Amazon.com"]),
        "images": [f"https://m.media-amazon.com/images/I/{make_asin(rng)[2:]}{k}L._AC_SL1500_.jpg"
                   for k in range(rng.randint(1, 4))],
        "timestamp": when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z",
        "input": {"url": f"https://www.amazon.com/dp/{asin}"},
    }


def too_similar(desc: str, others: list[set]) -> bool:
    s = shingles(desc)
    return any(len(s & o) / len(s | o) >= DISTINCT_MAX_JACCARD for o in others)


def near_duplicate_description(rng: random.Random, text: str) -> tuple[str, str]:
    """A few words changed or one sentence added, keeping 5-shingle Jaccard high."""
    candidates = []
    for sentence in NEAR_DUPLICATE_SENTENCES:
        candidates.append((text + " " + sentence, "sentence added"))
    for word, swap in WORD_SWAPS.items():
        m = re.search(rf"\b{word}\b", text)
        if m:
            candidates.append((text[:m.start()] + swap + text[m.end():], f"'{word}' -> '{swap}'"))
    rng.shuffle(candidates)
    for new, edit in candidates:
        if NEAR_DUPLICATE_MIN_JACCARD <= jaccard(text, new) < 1:
            return new, edit
    raise RuntimeError("no near-duplicate edit keeps Jaccard high enough")


def make_products(rng: random.Random) -> tuple[list, list[dict]]:
    start = datetime(2026, 2, 2, 11, 37, 5, 827000, tzinfo=timezone.utc)
    clock = iter(start + timedelta(seconds=7 * i + (i * 13) % 5) for i in range(10_000))

    clean: list[dict] = []
    seen_shingles: list[set] = []
    titles: set[str] = set()
    while len(clean) < N_CLEAN + 8:  # 8 more to damage into malformed records
        rec = make_product(rng, next(clock))
        if rec["title"] in titles or too_similar(rec["description"], seen_shingles):
            continue
        titles.add(rec["title"])
        seen_shingles.append(shingles(rec["description"]))
        clean.append(rec)
    to_damage, clean = clean[N_CLEAN:], clean[:N_CLEAN]

    # (record, label) pairs planted into the array; duplicates point at their original object.
    planted: list[tuple[object, dict]] = []
    # Near duplicates come from longer descriptions: one edit moves a short text's Jaccard too far.
    long_enough = [i for i in range(N_CLEAN) if len(clean[i]["description"].split()) >= 55]
    near_originals = rng.sample(long_enough, N_NEAR_DUPLICATES)
    exact_originals = rng.sample(sorted(set(range(N_CLEAN)) - set(near_originals)), N_EXACT_DUPLICATES)
    for i in exact_originals:
        planted.append((dict(clean[i]), {"kind": "exact_duplicate", "of": clean[i], "expect": "rejected"}))
    for i in near_originals:
        orig = clean[i]
        desc, edit = near_duplicate_description(rng, orig["description"])
        asin = make_asin(rng)
        dup = dict(orig, description=desc, asin=asin, url=orig["url"].rsplit("/dp/", 1)[0] + f"/dp/{asin}",
                   input={"url": f"https://www.amazon.com/dp/{asin}"}, seller_name="Amazon.com",
                   timestamp=next(clock).strftime("%Y-%m-%dT%H:%M:%S.000Z"))
        planted.append((dup, {"kind": "near_duplicate", "of": orig, "edit": edit,
                              "jaccard": round(jaccard(orig["description"], desc), 3), "expect": "rejected"}))

    planted += [(rec, label) for rec, label in make_malformed(to_damage)]
    for code, message in [("dead_page", "Page not found - the product is no longer available"),
                          ("dead_page", "Product page returned 404")]:
        asin = make_asin(rng)
        planted.append(({"timestamp": next(clock).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
                         "input": {"url": f"https://www.amazon.com/dp/{asin}"},
                         "error": message, "error_code": code},
                        {"kind": "error_record", "expect": "rejected"}))

    # Insert each planted record at a random place; duplicates always after their original.
    records: list = list(clean)
    for rec, label in planted:
        lo = next(k for k, r in enumerate(records) if r is label["of"]) + 1 if "of" in label else 0
        records.insert(rng.randint(lo, len(records)), rec)

    position = {id(r): k for k, r in enumerate(records)}
    labels = []
    for rec, label in planted:
        out = {"index": position[id(rec)], **label}
        if "of" in label:
            out["of"] = position[id(label["of"])]
        labels.append(out)
    labels.sort(key=lambda lab: lab["index"])
    return records, labels


def make_malformed(recs: list[dict]) -> list[tuple[object, dict]]:
    """Eight damaged records, one per kind of damage seen in real snapshots."""
    a, b, c, d, e, f, g, h = (dict(r) for r in recs)
    out: list[tuple[object, dict]] = []
    del a["title"]
    out.append((a, {"kind": "malformed", "defect": "missing_title", "field": "title", "expect": "rejected"}))
    b["description"] = None
    out.append((b, {"kind": "malformed", "defect": "null_description", "field": "description", "expect": "rejected"}))
    c["description"] = {"text": c["description"], "format": "plain"}
    out.append((c, {"kind": "malformed", "defect": "description_object", "field": "description", "expect": "rejected"}))
    d["initial_price"] = d["final_price"] = "N/A"
    d["rating"] = "4.5 out of 5 stars"
    out.append((d, {"kind": "malformed", "defect": "price_na_rating_text", "field": "final_price",
                    "expect": "repaired", "repaired": {"final_price": None, "rating": 4.5}}))
    sentences = re.split(r"(?<=\.) ", e["description"])
    e["description"] = ("<div class=\"a-section\">" + "".join(f"<p>{s}</p>" for s in sentences[:-1])
                        + f"<p><b>{sentences[-1]}</b></p></div>").replace(" & ", " &amp; ")
    out.append((e, {"kind": "malformed", "defect": "html_in_description", "field": "description",
                    "expect": "repaired", "repaired": {"description": " ".join(sentences)}}))
    clean_desc = "Café-style coffee at home: " + f["description"][0].lower() + f["description"][1:]
    f["description"] = clean_desc.encode("utf-8").decode("cp1252")
    assert ftfy.fix_text(f["description"]) == clean_desc
    out.append((f, {"kind": "malformed", "defect": "mojibake", "field": "description", "expect": "repaired",
                    "repaired": {"description": clean_desc}}))
    bare = f"{g['asin']} {g['title']}"
    out.append((bare, {"kind": "malformed", "defect": "bare_string", "field": None, "expect": "rejected"}))
    h["description"] = "   "
    out.append((h, {"kind": "malformed", "defect": "blank_description", "field": "description", "expect": "rejected"}))
    return out


# --------------------------------------------------------------------------------------------------
# General chat set: handwritten pairs + templated pairs.
# --------------------------------------------------------------------------------------------------

CAPITALS = {
    "France": "Paris", "Germany": "Berlin", "Italy": "Rome", "Spain": "Madrid", "Portugal": "Lisbon",
    "Canada": "Ottawa", "Mexico": "Mexico City", "Brazil": "Brasília", "Argentina": "Buenos Aires",
    "Chile": "Santiago", "Peru": "Lima", "Colombia": "Bogotá", "Egypt": "Cairo", "Kenya": "Nairobi",
    "Nigeria": "Abuja", "Ghana": "Accra", "Morocco": "Rabat", "Ethiopia": "Addis Ababa",
    "South Korea": "Seoul", "China": "Beijing", "India": "New Delhi", "Thailand": "Bangkok",
    "Vietnam": "Hanoi", "Indonesia": "Jakarta", "Turkey": "Ankara", "Greece": "Athens",
    "Norway": "Oslo", "Sweden": "Stockholm", "Finland": "Helsinki", "Denmark": "Copenhagen",
    "Poland": "Warsaw", "Austria": "Vienna", "Ireland": "Dublin", "Netherlands": "Amsterdam",
    "Belgium": "Brussels", "Switzerland": "Bern", "New Zealand": "Wellington", "Iceland": "Reykjavík",
    "Hungary": "Budapest", "Czech Republic": "Prague",
}

ANTONYMS = {
    "hot": "cold", "ancient": "modern", "generous": "selfish", "brave": "cowardly", "early": "late",
    "expand": "shrink", "victory": "defeat", "rough": "smooth", "ascend": "descend", "shallow": "deep",
    "accept": "refuse", "arrive": "depart", "borrow": "lend", "cheap": "expensive", "noisy": "quiet",
    "heavy": "light", "permanent": "temporary", "increase": "decrease", "wide": "narrow",
    "visible": "invisible", "strong": "weak", "friend": "enemy", "float": "sink", "forget": "remember",
    "polite": "rude", "question": "answer", "tight": "loose", "wet": "dry", "guilty": "innocent",
    "minimum": "maximum", "success": "failure", "asleep": "awake",
}

# (question unit, answer unit, factor or function, sample values)
CONVERSIONS = [
    ("kilometres", "miles", lambda x: x * 0.621371, [5, 10, 21, 42, 100]),
    ("miles", "kilometres", lambda x: x * 1.609344, [1, 3, 26, 50, 250]),
    ("kilograms", "pounds", lambda x: x * 2.20462, [1, 5, 20, 70]),
    ("pounds", "kilograms", lambda x: x * 0.453592, [2, 10, 150]),
    ("degrees Celsius", "degrees Fahrenheit", lambda x: x * 9 / 5 + 32, [0, 20, 37, 100, -10]),
    ("degrees Fahrenheit", "degrees Celsius", lambda x: (x - 32) * 5 / 9, [32, 50, 212, 98.6]),
    ("inches", "centimetres", lambda x: x * 2.54, [1, 12, 30]),
    ("metres", "feet", lambda x: x * 3.28084, [1, 10, 100]),
    ("litres", "US gallons", lambda x: x * 0.264172, [4, 20]),
    ("hours", "minutes", lambda x: x * 60, [2, 3.5, 8]),
]


def number(x: float) -> str:
    x = round(x, 1)
    return f"{int(x):,}" if x == int(x) else f"{x:,}"


def templated_pairs(rng: random.Random) -> list[tuple[str, str]]:
    pairs = []
    for _ in range(16):
        a, b = rng.randint(3, 99), rng.randint(3, 99)
        pairs.append((f"What is {a} plus {b}?", f"{a} plus {b} equals {a + b}."))
    for _ in range(12):
        a, b = rng.randint(20, 200), rng.randint(1, 19)
        pairs.append((f"What is {a} minus {b}?", f"{a} minus {b} equals {a - b}."))
    for _ in range(14):
        a, b = rng.randint(2, 15), rng.randint(2, 12)
        pairs.append((f"What is {a} times {b}?", f"{a} times {b} equals {a * b}."))
    for _ in range(8):
        b, q = rng.randint(2, 12), rng.randint(2, 12)
        pairs.append((f"What is {b * q} divided by {b}?", f"{b * q} divided by {b} equals {q}."))
    for src, dst, fn, values in CONVERSIONS:
        for v in values:
            phrasing = rng.choice(["How many {dst} is {v} {src}?", "Convert {v} {src} to {dst}.",
                                   "What is {v} {src} in {dst}?"])
            pairs.append((phrasing.format(v=number(v), src=src, dst=dst),
                          f"{number(v)} {src} is about {number(fn(v))} {dst}."))
    for country, capital in CAPITALS.items():
        pairs.append((f"What is the capital of {country}?", f"The capital of {country} is {capital}."))
    for word, opposite in ANTONYMS.items():
        pairs.append((f'What is the opposite of "{word}"?', f'The opposite of "{word}" is "{opposite}".'))
    return pairs


def handwritten_pairs(path: Path) -> list[tuple[str, str]]:
    """Parse "Q: ..." / "A: ..." blocks (an answer may span lines, e.g. a poem)."""
    pairs = []
    for n, block in enumerate(re.split(r"\n\s*\n", path.read_text(encoding="utf-8")), 1):
        lines = [ln for ln in block.strip().splitlines() if not ln.startswith("#")]
        if not lines:
            continue
        if not (lines[0].startswith("Q: ") and len(lines) > 1 and lines[1].startswith("A: ")):
            raise ValueError(f"{path}: block {n} must be 'Q: ...' then 'A: ...', got {lines[0][:60]!r}")
        answer = "\n".join([lines[1][3:], *lines[2:]])
        pairs.append((lines[0][3:].strip(), answer.strip()))
    return pairs


def make_general(rng: random.Random) -> tuple[list[dict], list[dict]]:
    pairs = handwritten_pairs(EXAMPLES / "general" / "handwritten.txt") + templated_pairs(rng)
    seen, unique = set(), []
    for q, a in pairs:
        key = q.lower()
        if key not in seen:
            seen.add(key)
            unique.append((q, a))
    rng.shuffle(unique)
    chats = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
             for q, a in unique]
    return chats[N_GENERAL_TEST:], chats[:N_GENERAL_TEST]


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def main() -> None:
    check_grammar()
    records, labels = make_products(random.Random(SEED))
    (EXAMPLES / "products.json").write_text(json.dumps(records, ensure_ascii=False, indent=1) + "\n",
                                           encoding="utf-8")
    write_jsonl(EXAMPLES / "products.labels.jsonl", labels)
    train, test = make_general(random.Random(SEED + 1))
    write_jsonl(EXAMPLES / "general" / "train.jsonl", train)
    write_jsonl(EXAMPLES / "general" / "test.jsonl", test)
    kinds: dict[str, int] = {}
    for lab in labels:
        kinds[lab["kind"]] = kinds.get(lab["kind"], 0) + 1
    print(f"products.json: {len(records)} records, planted {kinds}")
    print(f"general: {len(train)} train, {len(test)} test pairs")


if __name__ == "__main__":
    main()
